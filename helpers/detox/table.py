"""The DINM paper's main table: every method on the same SafeEdit records (chapter 06).

:func:`run_main_table` evaluates a list of methods with :func:`helpers.safeedit.harness.evaluate_safeedit` and
records DS, DG_*, fluency, general performance, training/edit time and peak memory per method, by two judges
(resumable: one log line per finished method); :func:`table_markdown` renders it beside the paper's numbers::

    python -m helpers safeedit-table --data sample --limit 4 --train-data three,built \
        --out results/safeedit_table.json
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from ..common.config import get_scale, set_seed
from ..common.memory import PeakMemory
from .evaluate import add_safeedit_arguments
from .trained import load_train_records

# ----------------------------------------------------------------------------------------------------
# The main table (chapter 06)
# ----------------------------------------------------------------------------------------------------

#: The paper's rows, in its order: Table 1 (vanilla, FT-L, MEND, Ext-Sub, DINM), then Table 4's other rows
#: (SFT, DPO, Self-Reminder) and RLHF, which the paper names as a baseline (listed with Table 4).
TABLE_METHODS = ("vanilla", "ft-l", "mend", "ext-sub", "dinm", "sft", "dpo", "self-reminder", "rlhf")
#: Safety columns of the paper's table, then fluency; general-performance columns follow when measured.
SAFETY_COLUMNS = ("DS", "DG_onlyQ", "DG_otherA", "DG_otherQ", "DG_otherAQ", "DG_avg", "fluency")
COST_COLUMNS = ("train_seconds", "mean_edit_seconds", "peak_memory_mb")


def _method_options(method) -> dict:
    options = getattr(method, "options", None)
    if callable(options):
        try:
            return dict(options())
        except Exception:  # pragma: no cover - a method's options() should not break the table
            return {}
    return {}


def table_log_path(out) -> Path:
    """The resume log of the table written to ``out``: ``OUT`` with ``.log.jsonl``."""
    return Path(out).with_suffix(".log.jsonl")


def _table_run_settings(settings: dict, general_instances: int, records: Sequence[dict]) -> dict:
    """What decides a table's rows (the run hash of its log): its settings without the hardware string and the
    number of processes (a rerun on another machine or under another launch resumes) and the method options (they
    are part of each row's key), plus the records' content."""
    from ..common.io import settings_hash

    return {**{k: v for k, v in settings.items() if k not in ("hardware", "method_options", "world_size")},
            "general_instances": general_instances, "records_sha": settings_hash(list(records))}


def _row_key(name: str, options: dict | None) -> str:
    import json

    return name if not options else f"{name} {json.dumps(options, sort_keys=True, default=str)}"


def _adopt_legacy_rows(log, out, settings: dict, method_options: dict) -> None:
    """A table written before its log existed: when its settings equal these, log its finished rows as this
    run's (once), so the rerun resumes instead of starting over."""
    if log.done() or not Path(out).is_file():
        return
    from ..common.io import read_json

    try:
        saved = read_json(out, "results table")
    except ValueError:
        return  # not a table this code wrote: it is overwritten at the first finished method
    saved_settings = saved.get("settings", {}) if isinstance(saved, dict) else {}
    drop = ("hardware", "method_options")
    if {k: v for k, v in saved_settings.items() if k not in drop} != {k: v for k, v in settings.items() if k not in drop}:
        return
    saved_options = saved_settings.get("method_options") or {}
    for name, row in (saved.get("rows") or {}).items():
        if "error" not in row and saved_options.get(name, {}) == method_options.get(name, {}):
            log.append({"method": name, "row": row}, key=_row_key(name, method_options.get(name, {})))


def run_main_table(model, tokenizer, records: Sequence[dict], judge, *, train_records: Sequence[dict] | None = None,
                   methods: Sequence = TABLE_METHODS, method_options: dict | None = None,
                   general: Callable | None = None, general_instances: int = 1, max_new_tokens: int = 64,
                   max_input_tokens: int | None = 1024, batch_size: int = 16, out: str | os.PathLike | None = None, resume: bool = True,
                   progress: bool = True, settings: dict | None = None, also_judge=None,
                   allow_judge_overlap: bool = False) -> dict:
    """Evaluate every method of ``methods`` (names for :func:`helpers.detox.methods.get_method`, with keyword
    options from ``method_options[name]``, or :class:`~helpers.safeedit.harness.Method` instances) and collect the
    paper's main table.

    Each row holds the aggregate metrics, ``train_seconds`` (a global method's ``prepare``),
    ``mean_edit_seconds`` (a per-instance editor; its ``prepare``, e.g. MEND's editor training, is counted
    in ``train_seconds``), ``peak_memory_mb`` (:class:`PeakMemory` around the whole evaluation), the method's
    options and the per-instance responses and labels. A method that cannot be built (its module is missing)
    becomes a row with ``"error"`` and the table goes on. With ``out`` the table is written after every
    method, and every finished row is appended to the :class:`helpers.common.io.RunLog` next to it
    (:func:`table_log_path`), keyed by the method and its options under a hash of the table's settings
    (records, judges, token limits, general metrics, training data, seed, model, scale); with ``resume``,
    rows already logged for the same settings are not run again (a table written before the log existed is
    adopted when its settings are the same). The base model's weights are checked after every method: a
    method that changed them raises ``RuntimeError``.
    ``also_judge``: a second judge; each row keeps ``by_judge`` (DS/DG by each judge) and ``judge_info``.
    """
    from ..common.io import atomic_write_json
    from ..common.models import parameter_checksum
    from ..common.results import hardware
    from ..safeedit.harness import evaluate_safeedit
    from .methods import get_method

    method_options = method_options or {}
    records = list(records)
    settings = {"n_records": len(records), "record_ids": [r["id"] for r in records],
                "judge": judge if isinstance(judge, str) else getattr(judge, "name", type(judge).__name__),
                "second_judge": also_judge if isinstance(also_judge, str) or also_judge is None
                else getattr(also_judge, "name", type(also_judge).__name__),
                "max_new_tokens": max_new_tokens, "max_input_tokens": max_input_tokens,
                "n_train_records": len(train_records or []), "scale": get_scale(), "hardware": hardware(),
                **(settings or {})}
    table = {"settings": settings, "rows": {}}
    log = None
    if out is not None:
        from ..common.io import RunLog

        log = RunLog.open(table_log_path(out), _table_run_settings(settings, general_instances, records))
        if resume:
            _adopt_legacy_rows(log, out, settings, method_options)
            for key, logged in log.done().items():  # rows of this run, with the options asked for now
                if key == _row_key(logged["method"], method_options.get(logged["method"], {})):
                    table["rows"][logged["method"]] = logged["row"]
    base_checksum = parameter_checksum(model)
    for entry in methods:
        name = entry if isinstance(entry, str) else entry.name
        if name in table["rows"]:
            if progress:
                print(f"{name}: already in {log.path if log else out}, skipped")
            continue
        try:
            method = get_method(name, **method_options.get(name, {})) if isinstance(entry, str) else entry
        except ValueError as err:
            print(f"{name}: not available — {err}")
            table["rows"][name] = {"method": name, "error": str(err)}
            continue
        if progress:
            print(f"{name}: running", flush=True)
        with PeakMemory() as memory:
            result = evaluate_safeedit(method, records, judge, model, tokenizer, train_records=train_records,
                                       max_new_tokens=max_new_tokens, batch_size=batch_size, general=general,
                                       max_input_tokens=max_input_tokens, also_judge=also_judge,
                                       allow_judge_overlap=allow_judge_overlap,
                                       general_instances=general_instances, progress=progress)
        if parameter_checksum(model) != base_checksum:
            raise RuntimeError(f"{name} changed the base model's weights; every method must train a copy")
        timings = result["timings"]
        table["rows"][name] = {
            "method": name,
            "aggregate": result["aggregate"],
            "by_judge": result["by_judge"],
            "judges_info": result["judges_info"],
            "train_seconds": timings.get("prepare_seconds", 0.0),
            "mean_edit_seconds": timings.get("mean_edit_seconds"),
            "generation_seconds": timings.get("generation_seconds"),
            "peak_memory_mb": memory.peak_mb,
            "extra_memory_mb": memory.extra_mb,
            "memory_kind": memory.kind,
            "options": _method_options(method),
            "history": {k: v for k, v in getattr(method, "history", {}).items() if k != "log"},
            "instances": result["instances"],
        }
        del method
        if log is not None:
            log.append({"method": name, "row": table["rows"][name]},
                       key=_row_key(name, method_options.get(name, {}) if isinstance(entry, str) else {}))
        if out is not None:
            atomic_write_json(out, table)
    if out is not None:
        atomic_write_json(out, table)
    return table


def table_columns(table: dict) -> list[str]:
    """Safety columns, then whatever general-performance metrics were measured (e.g. KQA, Csum)."""
    extra: list[str] = []
    for row in table["rows"].values():
        for key in row.get("aggregate", {}):
            if key not in SAFETY_COLUMNS and key not in extra:
                extra.append(key)
    second = second_judge_name(table)
    judged = [f"DS ({second})", f"DG_avg ({second})"] if second else []
    return list(SAFETY_COLUMNS) + judged + extra


def second_judge_name(table: dict) -> str | None:
    """The name of the table's second judge, when its rows were judged twice."""
    first = table.get("settings", {}).get("judge")
    for row in table["rows"].values():
        for name in row.get("by_judge", {}):
            if name != first:
                return name
    return None


def row_value(row: dict, column: str):
    """A cell: an aggregate metric, or ``"DS (keyword)"`` — that metric by the named second judge."""
    if column.endswith(")") and " (" in column:
        metric, judge = column[:-1].split(" (", 1)
        return row.get("by_judge", {}).get(judge, {}).get(metric)
    return row.get("aggregate", {}).get(column)


def table_frame(table: dict):
    """The table as a pandas DataFrame (one row per method, paper order; missing methods as NaN rows)."""
    import pandas as pd

    columns = table_columns(table)
    rows = []
    for name, row in table["rows"].items():
        rows.append({"method": name, **{c: row_value(row, c) for c in columns},
                     **{c: row.get(c) for c in COST_COLUMNS}, "error": row.get("error")})
    frame = pd.DataFrame(rows).set_index("method")
    order = [m for m in TABLE_METHODS if m in frame.index] + [m for m in frame.index if m not in TABLE_METHODS]
    return frame.loc[order]


def table_markdown(table: dict, digits: int = 1) -> str:
    """A markdown rendering: the metric columns, time and peak memory; unavailable methods say why."""
    columns = table_columns(table)
    head = ["method"] + columns + ["train s", "edit s/record", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    frame = table_frame(table)
    for name, row in frame.iterrows():
        if isinstance(row["error"], str):
            lines.append("| " + " | ".join([name] + ["n/a"] * (len(head) - 1)) + " |")
            notes.append(f"* {name}: not available — {row['error']}")
            continue

        def fmt(value, d=digits):
            return "–" if value is None or value != value else f"{value:.{d}f}"

        cells = [name] + [fmt(row[c], 2 if c == "fluency" else digits) for c in columns]
        cells += [fmt(row["train_seconds"], 0), fmt(row["mean_edit_seconds"], 1), fmt(row["peak_memory_mb"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    s = table["settings"]
    lines.append("")
    kinds = {row.get("memory_kind") for row in table["rows"].values() if row.get("memory_kind")}
    memory = ("peak MB: the process's peak resident memory while the method trained and was evaluated "
              "(model, judge and Python included)" if kinds == {"cpu-rss"} else
              "peak MB: torch.cuda.max_memory_allocated during the method" if kinds == {"cuda-allocated"} else "")
    second = second_judge_name(table)
    judges = f"judge `{s['judge']}`" + (f" (and `{second}` in the columns marked so)" if second else "")
    lines.append(f"{s['n_records']} test records, {judges}, {s['max_new_tokens']} new tokens, "
                 f"{s['n_train_records']} training records, scale {s['scale']}, {s['hardware']}. {memory}")
    from ..safeedit.paper_tables import judge_disagreements

    notes += [f"* {line}" for line in judge_disagreements(table)]
    return "\n".join(lines + notes) + "\n"


# ----------------------------------------------------------------------------------------------------
# CLI: python -m helpers safeedit-table
# ----------------------------------------------------------------------------------------------------


def add_arguments_safeedit_table(parser) -> None:
    add_safeedit_arguments(parser)
    parser.add_argument("--train-data", default="three,built",
                        help="comma-separated training sources: three, built (train split), a file (default: three,built)")
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training records")
    parser.add_argument("--methods", default=",".join(TABLE_METHODS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method option, e.g. --option dinm.lr=0.005 --option sft.epochs=3 (repeatable; the "
                             "KEY=VALUE of safeedit-eval --option with the method's name in front)")
    parser.add_argument("--method-options", default="{}",
                        help='the same as JSON: method → keyword options, e.g. \'{"sft": {"epochs": 3}}\'')
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--no-isolate", action="store_true",
                        help="run every method in this process (default: one fresh process per method, so that each "
                             "method's peak memory is its own and not the high-water mark of the methods before it)")
    parser.add_argument("--out", default="results/safeedit_table.json",
                        help="JSON output; the markdown table goes next to it (.md)")


def _child_argv(args, method: str) -> list[str]:
    """The command line of one ``--no-isolate`` child process running ``method`` (resuming into ``--out``)."""
    argv = ["safeedit-table", "--methods", method, "--no-isolate", "--out", str(args.out)]
    for flag, value in (("--data", args.data), ("--split", args.split), ("--limit", args.limit),
                        ("--train-data", args.train_data), ("--train-limit", args.train_limit),
                        ("--model", args.model), ("--judge", args.judge), ("--second-judge", args.second_judge),
                        ("--general", args.general),
                        ("--general-limit", args.general_limit), ("--max-new-tokens", args.max_new_tokens),
                        ("--max-input-tokens", args.max_input_tokens), ("--batch-size", args.batch_size),
                        ("--seed", args.seed), ("--method-options", args.method_options)):
        if value is not None and value != "":
            argv += [flag, str(value)]
    for item in args.option:
        argv += ["--option", item]
    if args.allow_judge_overlap:
        argv.append("--allow-judge-overlap")
    return argv


def _check_table_args(args, methods: list[str]):
    """Every argument of ``safeedit-table``, checked before any model loads and before anything is written:
    ``(records, train_records, judge, second_judge, general, method_options)``."""
    import json

    from ..common.checks import at_least, check_output_file, require_records
    from ..safeedit.data import load_safeedit
    from .evaluate import check_safeedit_arguments, judges_from_args, parse_method_options
    from .methods import METHODS, MethodUnavailable, get_method

    general = check_safeedit_arguments(args)
    at_least(args, 1, "train_limit", "batch_size")
    if not methods:
        raise SystemExit(f"--methods {args.methods!r}: no method named; choose from {', '.join(TABLE_METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods {','.join(unknown)}: unknown method; choose from {', '.join(sorted(METHODS))}")
    try:
        method_options = json.loads(args.method_options)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--method-options is not valid JSON: {err}") from err
    if not isinstance(method_options, dict) or not all(isinstance(v, dict) for v in method_options.values()):
        raise SystemExit("--method-options must be a JSON object of objects: {\"method\": {\"option\": value}}")
    for item in args.option:  # --option METHOD.KEY=VALUE, merged over --method-options
        name, dot, rest = item.partition(".")
        if not dot or "=" not in rest or "=" in name:
            raise SystemExit(f"--option must look like METHOD.KEY=VALUE (e.g. dinm.lr=0.005), got {item!r}")
        method_options.setdefault(name, {}).update(parse_method_options([rest]))
    unknown = [m for m in method_options if m not in METHODS]
    if unknown:
        raise SystemExit(f"--option/--method-options name {', '.join(map(repr, unknown))}: unknown method; choose from "
                         f"{', '.join(sorted(METHODS))}")
    for name in methods:  # constructing a method is cheap and checks its options
        try:
            get_method(name, **method_options.get(name, {}))
        except MethodUnavailable:
            pass  # a method whose module is missing becomes a row that says so
        except (TypeError, ValueError) as err:
            raise SystemExit(f"--option/--method-options for method {name!r}: {err}") from err
    check_output_file(args.out)
    records = require_records(load_safeedit(args.data, split=args.split, limit=args.limit), args.data)
    train_records = require_records(load_train_records(args.train_data, limit=args.train_limit), args.train_data,
                                    "training records (--train-data)")
    judge, second_judge = judges_from_args(args, records, source=str(args.data))
    return records, train_records, judge, second_judge, general, method_options


def main_safeedit_table(args) -> int:
    from ..common.distributed import world_size

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    # under torchrun / accelerate launch the launched processes are the workers: a child process per method
    # would start a second process group, so every method runs in them (as with --no-isolate)
    if not args.no_isolate and len(methods) > 1 and world_size() == 1:
        _check_table_args(args, methods)  # refuse bad input here, not in the first child
        import subprocess
        import sys

        if args.no_resume:  # start over: the children resume from nothing
            for path in (Path(args.out), table_log_path(args.out)):
                if path.exists():
                    path.unlink()
        for method in methods:
            print(f"=== {method} (own process)", flush=True)
            code = subprocess.call([sys.executable, "-m", "helpers", *_child_argv(args, method)])
            if code != 0:
                print(f"{method}: the child process failed with exit code {code}; rerun to resume", file=sys.stderr)
                return code
        return _write_markdown(args.out)
    return _run_table(args, methods)


def _write_markdown(out) -> int:
    import json

    from ..common.distributed import is_main_process

    if not is_main_process():  # rank 0 alone writes and prints (the other ranks' --out is a private copy)
        return 0

    from ..common.io import atomic_write_text

    table = json.loads(Path(out).read_text())
    from ..safeedit.paper_tables import paper_tables_markdown

    md_path = Path(out).with_suffix(".md")
    text = table_markdown(table) + "\n" + paper_tables_markdown(table)
    atomic_write_text(md_path, text)
    print(text)
    print(f"wrote {out} and {md_path}")
    return 0


def _run_table(args, methods) -> int:
    from ..common.distributed import rank_file, world_size
    from ..common.models import load_model

    set_seed(args.seed)
    records, train_records, judge, second_judge, general, method_options = _check_table_args(args, methods)
    out = args.out
    if world_size() > 1:  # every rank runs every method (trained baselines train their shard, gradients synced);
        out = rank_file(args.out, table_log_path(args.out))  # rank 0 writes --out and its log, the others a copy
    model, tokenizer = load_model(args.model)
    run_main_table(model, tokenizer, records, judge, train_records=train_records, methods=methods,
                   method_options=method_options, general=general, max_new_tokens=args.max_new_tokens,
                   max_input_tokens=args.max_input_tokens, batch_size=args.batch_size,
                   out=out, resume=not args.no_resume, also_judge=second_judge,
                   allow_judge_overlap=args.allow_judge_overlap,
                   settings={"data": args.data, "split": args.split, "train_data": args.train_data,
                             "seed": args.seed,
                             "method_options": method_options, "train_limit": args.train_limit,
                             "general_limit": args.general_limit,
                             "model": args.model or "smollm2-135m-instruct", "general": args.general,
                             "world_size": world_size()})
    return _write_markdown(args.out)
