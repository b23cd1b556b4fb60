"""``python -m helpers safeedit-eval``: one detoxification method on SafeEdit records (chapters 02–06).

The flags every SafeEdit command shares live here too (:func:`add_safeedit_arguments`: records, model, judges,
answer and input budgets, general performance, seed) and one syntax for options, ``KEY=VALUE``
(:func:`parse_method_options`), so ``safeedit-table`` and ``dinm-sweep`` read them the same way::

    python -m helpers safeedit-eval --data sample --method dinm --limit 3 --out results/dinm_sample.json
"""
from __future__ import annotations

from typing import Sequence

from ..safeedit.harness import Method, evaluate_safeedit
from .methods import METHODS, _method_class, get_method


# ----------------------------------------------------------------------------------------------------
# CLI: python -m helpers safeedit-eval
# ----------------------------------------------------------------------------------------------------
def add_safeedit_arguments(parser, *, data: str = "sample", split: str = "test", limit: int | None = None,
                           general: str = "") -> None:
    """The flags every SafeEdit command shares, with one name and one default each (``safeedit-eval``,
    ``safeedit-table``, ``dinm-sweep``); the commands differ only in the defaults passed here."""
    parser.add_argument("--data", default=data,
                        help=f"SafeEdit records: 'sample', 'built', 'official' or a JSON file (default: {data})")
    parser.add_argument("--split", default=split, help=f"split for --data built or official (default: {split})")
    parser.add_argument("--limit", type=int, default=limit,
                        help=f"use the first N records (default: {'all' if limit is None else limit})")
    parser.add_argument("--model", default=None, help="model name or folder (default: the embedded smollm2-135m-instruct)")
    add_judge_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help=f"answer budget (default: {MAX_NEW_TOKENS['small']} in small mode; the reference's "
                             f"{MAX_NEW_TOKENS['full']} in full mode)")
    parser.add_argument("--max-input-tokens", "--max-prompt-tokens", dest="max_input_tokens", type=int, default=1024,
                        help="edit and evaluation inputs longer than this keep their last N tokens (default: 1024; "
                             "--max-prompt-tokens is the same flag)")
    parser.add_argument("--general", default=general,
                        help="comma-separated general-performance metrics: kqa,csum,over-refusal "
                             f"(default: {general or 'none'})")
    parser.add_argument("--general-limit", default=None,
                        help="items per general metric, e.g. kqa=300,csum=100 (default: the scale's limits)")
    parser.add_argument("--seed", type=int, default=0)


def check_safeedit_arguments(args):
    """The checks of the shared flags (:func:`add_safeedit_arguments`), before any model loads: limits ≥ 1, a
    model name that can exist, known general metrics; the answer budget filled in from the scale. Returns the
    general-performance function (``None`` when ``--general`` names none)."""
    from ..common.checks import at_least, check_model_name

    at_least(args, 1, "limit", "max_new_tokens", "max_input_tokens")
    check_model_name(args.model)
    general = general_from_spec(args.general, parse_general_limit(args.general_limit))
    if args.max_new_tokens is None:
        args.max_new_tokens = default_max_new_tokens()
    return general


def add_arguments(parser) -> None:
    add_safeedit_arguments(parser)
    parser.add_argument("--method", default="vanilla", choices=sorted(METHODS))
    parser.add_argument("--train-data", default=None,
                        help="training records for methods that train (file, 'built' or 'three'; default: built train)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--general-instances", type=int, default=1,
                        help="per-instance methods: measure general performance after each of the first N edits "
                             "and average (default 1)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option, e.g. --option lr=0.005 --option kl_weight=10 for dinm (repeatable; "
                             "values are read as JSON when they parse, else as text)")
    parser.add_argument("--log", default=None,
                        help="per-instance methods (dinm, ft-l, mend): append each finished record to this JSONL log "
                             "and resume from it (default: OUT with .log.jsonl; 'none' to switch off); refused for "
                             "the methods that evaluate in one pass")
    parser.add_argument("--out", default="results.json", help="where to write results.json")
    from ..common.backend import add_backend_arguments

    add_backend_arguments(parser)


def edits_weights(method: Method) -> bool:
    """Whether ``method`` changes the model's weights in this process (trains in :meth:`Method.prepare` or
    edits per instance): such a method cannot be evaluated through a generation server."""
    return bool(method.per_instance) or type(method).prepare is not Method.prepare


def check_backend_method(backend_spec, method: Method, method_name: str) -> None:
    """``--backend`` only for methods that leave the weights alone (vanilla, self-reminder); ``SystemExit``
    otherwise, before anything loads."""
    from ..common.backend import parse_backend

    if parse_backend(backend_spec) is not None and edits_weights(method):
        raise SystemExit(f"--backend: method {method_name!r} edits the model's weights in this process, so a "
                         "generation server cannot evaluate it; --backend works with methods that do not "
                         "(vanilla, self-reminder). To evaluate a saved SFT/DPO model through a server, serve "
                         "its folder and run --method vanilla --backend openai:FOLDER")


def parse_general_limit(text: str | None) -> dict[str, int] | None:
    """``"kqa=12,csum=4"`` → ``{"kqa": 12, "csum": 4}``; empty → ``None``; anything else → ``SystemExit``."""
    if not text:
        return None
    try:
        limit = {k.strip().lower(): int(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError as err:
        raise SystemExit(f"--general-limit must look like kqa=12,csum=4, got {text!r}") from err
    from ..safeedit.metrics import GENERAL_KEYS

    unknown = sorted(set(limit) - set(GENERAL_KEYS))
    if unknown or any(v < 1 for v in limit.values()):
        raise SystemExit(f"--general-limit {text!r}: names must be among {sorted(GENERAL_KEYS)} and counts ≥ 1")
    return limit


def parse_method_options(items: Sequence[str], flag: str = "--option") -> dict:
    """``["lr=0.005", "suffix=true", "variant=last"]`` → ``{"lr": 0.005, "suffix": True, "variant": "last"}``: the
    one option syntax of the SafeEdit commands (values are JSON when they parse, else text)."""
    import json

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"{flag} must look like KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def general_from_spec(spec: str | Sequence[str] | None, limit=None):
    """``"kqa,csum"`` (or a list of names) → a ``general(model, tokenizer)`` callback for
    :func:`evaluate_safeedit`; nothing named → ``None``. ``limit``: items per metric, as in
    :func:`helpers.safeedit.metrics.general_performance`."""
    names = [g.strip() for g in (spec.split(",") if isinstance(spec, str) else spec or ()) if g.strip()]
    if not names:
        return None
    from ..safeedit.metrics import GENERAL_KEYS, general_performance

    unknown = [n for n in names if n.lower() not in GENERAL_KEYS]
    if unknown:  # checked here, before any model loads
        raise SystemExit(f"--general {','.join(unknown)}: unknown general-performance metric; choose from "
                         f"{', '.join(sorted(GENERAL_KEYS))}")

    def general(model, tokenizer, extra_prompts=(), format_input=None):
        kwargs = {"format_input": format_input} if format_input is not None else {}
        if any(n.strip().lower().replace("_", "-") == "over-refusal" for n in names):
            kwargs["extra_prompts"] = extra_prompts
        return general_performance(model, tokenizer, names, limit=limit, **kwargs)

    return general


def default_judge_name() -> str:
    from ..safeedit.judge import JUDGES

    return "probe" if "probe" in JUDGES else "keyword"


#: Answer budget by scale: a CPU-sized one in small mode, the reference's 600 new tokens in full mode.
MAX_NEW_TOKENS = {"small": 64, "full": 600}


def default_max_new_tokens() -> int:
    from ..common.config import get_scale

    return MAX_NEW_TOKENS[get_scale()]


def add_judge_arguments(parser) -> None:
    """The judge flags every SafeEdit command shares."""
    parser.add_argument("--judge", default=None, help="judge name (default: probe, the offline learned judge)")
    parser.add_argument("--second-judge", default="keyword",
                        help="a second judge whose DS/DG are reported beside the first (default: keyword; "
                             "'none' to switch off)")
    parser.add_argument("--allow-judge-overlap", action="store_true",
                        help="run even when a judge was trained on a text of the evaluated records")


def judges_from_args(args, records: Sequence[dict], source: str = "<records>"):
    """``(judge, second_judge)`` from ``--judge``/``--second-judge``, with the overlap check done on the
    judges' training texts; raises ``SystemExit`` for an unknown name or an overlap (before any model of the
    evaluation loads; a probe that is not cached yet trains here)."""
    from ..safeedit.judge import JUDGES, JudgeNotAvailableError, get_judge
    from ..safeedit.judge_data import JudgeOverlapError, check_judge_overlap

    names = [args.judge or default_judge_name()]
    second = (getattr(args, "second_judge", None) or "none").strip()
    if second.lower() != "none" and second != names[0]:
        names.append(second)
    for flag, name in zip(("--judge", "--second-judge"), names):
        if name not in JUDGES:
            raise SystemExit(f"{flag} {name!r}: unknown judge; choose one of {sorted(JUDGES)} (or 'none' for --second-judge)")
    judges = []
    for name in names:
        try:
            judges.append(get_judge(name))
        except JudgeNotAvailableError as err:
            raise SystemExit(f"judge {name!r}: {err}") from err
        try:
            check_judge_overlap(judges[-1], records, allow=getattr(args, "allow_judge_overlap", False), source=source)
        except JudgeOverlapError as err:
            raise SystemExit(str(err)) from err
    return judges[0], (judges[1] if len(judges) > 1 else None)


def main(args) -> int:
    import json
    from pathlib import Path

    from ..common.backend import backend_from_args
    from ..common.checks import at_least, check_output_file, require_records
    from ..common.config import set_seed
    from ..common.distributed import is_main_process, rank_file, world_size
    from ..common.io import atomic_write_json
    from ..common.models import load_model
    from ..common.results import hardware
    from ..safeedit.data import load_safeedit

    # every argument is checked before any model loads and before anything is written
    general = check_safeedit_arguments(args)
    at_least(args, 1, "general_instances", "batch_size")
    check_output_file(args.out)
    explicit_log = args.log is not None and args.log.strip().lower() != "none"
    if args.log is None:
        log_path = Path(args.out).with_suffix(".log.jsonl")
    else:
        log_path = Path(args.log) if explicit_log else None
    options = parse_method_options(args.option)
    set_seed(args.seed)
    try:
        method = get_method(args.method, **options)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--option for method {args.method!r}: {err}") from err
    if not method.per_instance:
        if explicit_log:  # honoured for the methods that resume record by record, refused for the others
            per_instance = sorted(n for n in METHODS if getattr(_method_class(n), "per_instance", False))
            raise SystemExit(f"--log {args.log}: method {args.method!r} evaluates all records in one pass, so it "
                             f"has no per-record log to resume from; --log applies to {', '.join(per_instance)}")
        log_path = None
    if log_path is not None:
        check_output_file(log_path, "--log")
    which = args.data
    records = require_records(load_safeedit(which, split=args.split, limit=args.limit), which)
    train_records = None
    check_backend_method(getattr(args, "backend", None), method, args.method)
    if getattr(args, "backend", None) and args.model is not None:
        raise SystemExit("--model and --backend both name a model: with --backend openai:MODEL the server's MODEL "
                         "is evaluated (leave --model out)")
    backend = backend_from_args(args)  # flags checked and the server reached before a judge or model loads
    if type(method).prepare is not Method.prepare:
        train_source = args.train_data or "built"
        train_records = require_records(load_safeedit(train_source, split="train"), train_source,
                                        "training records (--train-data)")
    judge, second_judge = judges_from_args(args, records, source=str(which))
    # under torchrun / accelerate launch a trained baseline trains its shard of every batch with synchronised
    # gradients (every rank holds the same model); the harness then gives each rank its share of the records (an
    # editor) or of the inputs (a global method) and the ranks exchange results; rank 0 alone writes --out and
    # the log, the other ranks keep a private copy of the log
    if log_path is not None and world_size() > 1:
        log_path = rank_file(log_path)
    if backend is not None:
        model, tokenizer = backend, None
    else:
        model, tokenizer = load_model(args.model)
    results = evaluate_safeedit(method, records, judge, model, tokenizer, train_records=train_records,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                max_input_tokens=args.max_input_tokens, general=general,
                                general_instances=args.general_instances, log_path=log_path, source=str(which),
                                also_judge=second_judge, allow_judge_overlap=args.allow_judge_overlap)
    model_name = backend.name if backend is not None else args.model or "smollm2-135m-instruct"
    results["settings"] = {"data": which, "model": model_name, "limit": args.limit,
                           "max_new_tokens": args.max_new_tokens, "max_input_tokens": args.max_input_tokens,
                           "general": args.general, "general_limit": args.general_limit,
                           "general_instances": args.general_instances, "method_options": options,
                           "dtype": "the server's" if backend is not None else str(next(model.parameters()).dtype),
                           "hardware": hardware(), "seed": args.seed, "world_size": world_size(),
                           "sharded": world_size() > 1 and method.shardable}
    if backend is not None:
        results["settings"]["backend"] = {"base_url": backend.base_url, "concurrency": backend.concurrency}
    if train_records is not None:  # what the trained baseline's training did (loss per update, engine, ranks)
        history = getattr(method, "history", {}) or {}
        results["training"] = {k: history[k] for k in ("loss", "n_train_pairs", "train_seconds", "engine",
                                                       "world_size", "precision", "resumed_from_step")
                               if k in history}
    if not is_main_process():
        return 0
    atomic_write_json(args.out, results)
    print(json.dumps({"aggregate": results["aggregate"], "by_judge": results["by_judge"]}, indent=2))
    print(f"wrote {args.out}")
    return 0
