"""``python -m helpers dinm-sweep``: DINM's hyper-parameters, one factor at a time, on validation records.

Steps, learning rate, KL weight, the reference suffix and whether the KL term carries gradient, around a
centre configuration; every row is logged (resumable) and the summary written atomically. Hyper-parameters
are tuned on ``--split validation`` (the default) and reported on test.
"""
from __future__ import annotations

import time
from typing import Sequence

from .dinm import DINM
from .edit_inputs import _suffix, with_suffix

# ----------------------------------------------------------------------------------------------------
# Sweep (chapter 04): python -m helpers dinm-sweep
# ----------------------------------------------------------------------------------------------------
#: The centre of chapter 04's sweep: DINM as published (10 steps, λ = 10, the suffix on).
SWEEP_BASE = {"steps": 10, "lr": 1e-3, "kl_weight": 10.0, "kl_grad": True, "suffix": True}


def sweep_configs(kind: str = "small") -> list[dict]:
    """One-factor-at-a-time grid around :data:`SWEEP_BASE`: steps, learning rate, KL weight, suffix, KL gradient."""
    if kind == "none":
        return []
    base = dict(SWEEP_BASE)
    grid = [dict(base)]
    for steps in (5, 20):
        grid.append({**base, "steps": steps})
    for lr in (5e-4, 2e-3, 5e-3):
        grid.append({**base, "lr": lr})
    for kl_weight in (0.0, 1.0):
        grid.append({**base, "kl_weight": kl_weight})
    grid.append({**base, "suffix": False})  # the paper's ablation: without the suffix system prompt
    # the ablation: the reference's no-grad KL (then λ only scales the printed loss, not the update)
    grid.append({**base, "kl_grad": False})
    if kind == "tiny":
        return grid[:3]
    return grid


def parse_sweep_config(text: str) -> dict:
    """``"lr=5e-3,kl_weight=10"`` (the ``KEY=VALUE`` syntax of every SafeEdit command, comma-separated) or the
    JSON object ``'{"lr": 5e-3, "kl_weight": 10}'`` → :data:`SWEEP_BASE` with those keys replaced; unknown keys or
    malformed text raise ``SystemExit`` naming the option."""
    import json

    from .evaluate import parse_method_options

    if text.lstrip().startswith("{"):
        try:
            extra = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--config {text!r} is not JSON: {err.msg}") from err
    else:
        extra = parse_method_options([item for item in text.split(",") if item.strip()] or [text], flag="--config")
    if not isinstance(extra, dict):
        raise SystemExit(f"--config {text!r} must look like lr=0.005 or a JSON object like {{\"lr\": 0.005}}")
    unknown = sorted(set(extra) - set(SWEEP_BASE))
    if unknown:
        raise SystemExit(f"--config {text!r}: unknown keys {unknown}; known: {sorted(SWEEP_BASE)}")
    return {**SWEEP_BASE, **extra}


def config_key(config: dict) -> str:
    return ",".join(f"{k}={config[k]}" for k in sorted(config))


def run_sweep(model, tokenizer, records: Sequence[dict], judge, configs: Sequence[dict], *, log_path,
              max_new_tokens: int = 32, max_prompt_tokens: int = 1024, general: Sequence[str] = (),
              general_limit=None, vanilla: bool = True, progress: bool = True, also_judge=None,
              allow_judge_overlap: bool = False) -> list[dict]:
    """Evaluate DINM for each config (and vanilla, with and without the suffix) with the harness.

    Edit inputs and evaluation inputs both keep their last ``max_prompt_tokens`` tokens.

    Each finished config is appended to the :class:`helpers.common.io.RunLog` at ``log_path`` (with every response, so
    the rows can be re-judged later by :func:`rejudge`) and skipped when the sweep runs again with the same
    model, records, token limits, judges and general metrics (the log's settings hash; rows of other settings
    stay in the file but are never reused). ``general``:
    general-performance metrics (``"kqa"``, ``"csum"``) measured after the first edit (vanilla: once), on
    ``general_limit`` items (see :func:`helpers.safeedit.metrics.general_performance`). ``vanilla=False`` skips the
    two vanilla rows (e.g. when another process of the same sweep runs them).
    Returns all rows of the log: ``{"key", "method", "config", "aggregate", "instances", ...}``.
    """
    from pathlib import Path

    from tqdm.auto import tqdm

    from ..common.io import RunLog, settings_hash
    from ..safeedit.harness import VanillaMethod, evaluate_safeedit
    from .evaluate import general_from_spec

    def name_of(j):
        return None if j is None else j if isinstance(j, str) else getattr(j, "name", type(j).__name__)

    general = [g for g in (general.split(",") if isinstance(general, str) else general) if g.strip()]
    log = RunLog.open(Path(log_path), {
        "model": getattr(model, "name_or_path_for_course", None) or getattr(getattr(model, "config", None),
                                                                            "_name_or_path", ""),
        "records": settings_hash(list(records)), "max_new_tokens": max_new_tokens,
        "max_prompt_tokens": max_prompt_tokens, "judge": name_of(judge), "second_judge": name_of(also_judge),
        "general": sorted(g.strip().lower() for g in general if g.strip()), "general_limit": general_limit})
    done = log.done()
    ids = ",".join(str(r.get("id")) for r in records)

    def job_key(method_name: str, config: dict) -> str:
        return f"{method_name}:{config_key(config)}|records={ids}|tokens={max_prompt_tokens}/{max_new_tokens}"

    general_fn = general_from_spec(general, general_limit)
    jobs = [("vanilla", {"suffix": False}), ("vanilla", {"suffix": True})] if vanilla else []
    jobs += [("dinm", dict(c)) for c in configs]
    for method_name, config in tqdm(jobs, desc="sweep", disable=not progress):
        key = job_key(method_name, config)
        if key in done:
            continue
        if method_name == "vanilla":
            method = VanillaMethod()
            suffix = _suffix(config["suffix"])
            method.format_input = lambda text, s=suffix: with_suffix(text, s)  # type: ignore[method-assign]
        else:
            method = DINM(max_prompt_tokens=max_prompt_tokens, **config)
        t0 = time.perf_counter()
        result = evaluate_safeedit(method, records, judge, model, tokenizer, max_new_tokens=max_new_tokens,
                                   max_input_tokens=max_prompt_tokens, general=general_fn, progress=False,
                                   also_judge=also_judge, allow_judge_overlap=allow_judge_overlap)
        keep = ("id", "responses", "labels", "toxic_layer", "loss", "nll", "kl", "nll_after", "kl_after",
                "delta_norm", "edit_seconds")
        row = {"method": method_name, "config": config, "judge": result["judge"],
               "aggregate": result["aggregate"], "by_judge": result["by_judge"],
               "judges_info": result["judges_info"], "max_new_tokens": max_new_tokens,
               "max_prompt_tokens": max_prompt_tokens, "seconds": time.perf_counter() - t0,
               "mean_edit_seconds": result["timings"].get("mean_edit_seconds"),
               "instances": [{k: inst[k] for k in keep if k in inst} for inst in result["instances"]]}
        done[key] = log.append(row, key=key)
    return [done[k] for k in dict.fromkeys(job_key(m, c) for m, c in jobs) if k in done]


def rejudge(rows: Sequence[dict], judge) -> list[dict]:
    """Recompute DS/DG of sweep rows from their stored responses with another ``judge`` (name or Judge), and
    fluency as the reference computes it (:func:`helpers.safeedit.metrics.record_fluency`: all five responses of a
    record), so rows saved by an older version read the same as new ones.

    General-performance numbers do not depend on the judge and are kept.
    """
    from ..safeedit.judge import get_judge
    from ..safeedit.metrics import METRIC_KEYS, aggregate_safety, record_fluency

    judge = get_judge(judge) if isinstance(judge, str) else judge
    out = []
    for row in rows:
        texts = [inst["responses"][k] for inst in row["instances"] for k in METRIC_KEYS]
        labels = judge.predict(texts)
        by_key = {k: labels[i::len(METRIC_KEYS)] for i, k in enumerate(METRIC_KEYS)}
        aggregate = {**row["aggregate"], **aggregate_safety(by_key),
                     "fluency": record_fluency([inst["responses"] for inst in row["instances"]])}
        out.append({**row, "judge": judge.name, "aggregate": aggregate})
    return out


def add_arguments_dinm_sweep(p) -> None:
    from .evaluate import add_safeedit_arguments

    add_safeedit_arguments(p, data="built", split="validation", limit=3, general="kqa,csum")
    p.add_argument("--grid", default="small", choices=["small", "tiny", "none"],
                   help="the built-in one-factor grid ('none': only the --config rows)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="an extra configuration over the base, e.g. lr=5e-3,kl_weight=10 (repeatable; a JSON object "
                        "such as '{\"lr\": 5e-3}' is read too)")
    p.add_argument("--no-vanilla", action="store_true", help="skip the two vanilla rows")
    p.add_argument("--log", default=None, help="JSONL log (resumable); default results/dinm_sweep.jsonl")
    p.add_argument("--out", default=None, help="summary JSON; default results/dinm_sweep.json")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")


def main_dinm_sweep(args) -> int:
    import json

    from ..common.checks import at_least, check_output_file, require_records
    from ..common.config import results_dir, set_seed
    from ..common.io import atomic_write_json
    from ..common.models import load_model
    from ..common.results import hardware
    from ..safeedit.data import load_safeedit
    from .evaluate import check_safeedit_arguments, judges_from_args, parse_general_limit

    # every argument is checked before any model loads and before anything is written
    check_safeedit_arguments(args)
    at_least(args, 1, "threads")
    general_limit = parse_general_limit(args.general_limit)
    configs = sweep_configs(args.grid) + [parse_sweep_config(text) for text in args.config]
    if not configs and args.no_vanilla:
        raise SystemExit("nothing to run: --grid none, no --config and --no-vanilla")
    for flag, path in (("--log", args.log), ("--out", args.out)):
        if path is not None:
            check_output_file(path, flag)
    set_seed(args.seed)
    records = require_records(load_safeedit(args.data, split=args.split, limit=args.limit), args.data)
    judge, second_judge = judges_from_args(args, records, source=str(args.data))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    log = args.log or results_dir() / "dinm_sweep.jsonl"
    model, tokenizer = load_model(args.model)
    rows = run_sweep(model, tokenizer, records, judge, configs, log_path=log,
                     max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_input_tokens,
                     general=[g for g in args.general.split(",") if g.strip()], general_limit=general_limit,
                     vanilla=not args.no_vanilla, also_judge=second_judge,
                     allow_judge_overlap=args.allow_judge_overlap)
    import datetime

    summary = {"date": datetime.date.today().isoformat(), "data": args.data, "split": args.split, "limit": args.limit, "model": args.model or "smollm2-135m-instruct",
               "judge": judge.name, "hardware": hardware(), "max_new_tokens": args.max_new_tokens,
               "max_prompt_tokens": args.max_input_tokens, "general": args.general,
               "general_limit": args.general_limit, "dtype": str(next(model.parameters()).dtype),
               "command": "python -m helpers dinm-sweep " + " ".join(getattr(args, "argv", None) or []),
               "rows": rows}
    out = args.out or results_dir() / "dinm_sweep.json"
    atomic_write_json(out, summary)
    print(json.dumps([(r["key"], r["aggregate"]) for r in rows], indent=1))
    print(f"wrote {out}")
    return 0
