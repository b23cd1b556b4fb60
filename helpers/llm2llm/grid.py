"""``python -m helpers llm2llm-grid``: LLM2LLM against its baselines on whole test sets, several seeds, every
iteration — the numbers chapter 08's single small run cannot give.

For every data set and random seed, :func:`helpers.llm2llm.compare.compare_methods` runs seed-only fine-tuning,
LLM2LLM, AugGPT and EDA at an equal data budget for ``iterations = 1 … K`` (the LLM2LLM run folder is shared
and extended, so round ``k`` reuses rounds ``< k``; AugGPT and EDA get the budget LLM2LLM used up to round
``k``). Each finished cell becomes rows ``{dataset, method, teacher, seed, seed_size, iteration, train_size,
n_test, test_accuracy}`` (accuracy 0–1) in one results file, rewritten atomically after every cell, with the
command, the hardware and the settings. Round 1 of every data set and seed comes before any round 2, so a grid
stopped part-way holds complete earlier rounds. Everything resumes: rerun the same command and finished cells are read
back from their logs.

    python -m helpers llm2llm-grid --datasets trec,sst2,snips --seeds 0,1,2 --iterations 3 \\
        --out results/llm2llm_classification_grid.json
"""
from __future__ import annotations

import datetime
from pathlib import Path

from .compare import METHODS

#: seed-set sizes when --seed-sizes does not name one: ~1 % of the training split, at least two per label
#: (the paper's exact classification seed sizes are not given here). Training splits of the course data:
#: SST-2 60,614 phrases, TREC 5,452, SNIPS 13,084.
DEFAULT_SEED_SIZES = {"sst2": 606, "trec": 55, "snips": 131, "casehold": 450}


def grid_rows(comparison: dict, *, dataset: str, seed: int, iteration: int) -> list[dict]:
    """The rows one :func:`compare_methods` result adds at round ``iteration`` (seed-only only at round 1,
    as iteration 0)."""
    base = {"dataset": dataset, "teacher": comparison["teacher"], "seed": seed,
            "seed_size": comparison["seed_size"], "n_test": comparison["test_size"]}
    rows = []
    for method, result in comparison["methods"].items():
        if method == "seed-only" and iteration != 1:
            continue
        rows.append({**base, "method": method, "iteration": 0 if method == "seed-only" else iteration,
                     "train_size": result["train_size"], "test_accuracy": result["test_accuracy"]})
    return rows


def run_grid(datasets, seeds, *, iterations: int, out, work, seed_sizes: dict | None = None, test_size=None,
             teacher=None, student=None, command: str = "", progress: bool = True, **train) -> dict:
    """Run (or resume) the grid; returns the results written to ``out``."""
    from ..common.io import atomic_write_json
    from ..common.results import hardware
    from .compare import compare_methods

    seed_sizes = {**DEFAULT_SEED_SIZES, **(seed_sizes or {})}
    results = {"command": command, "hardware": hardware(), "date": datetime.date.today().isoformat(),
               "methods": list(METHODS), "settings": {"iterations": iterations, "test_size": test_size,
                                                     "seed_sizes": {d: seed_sizes[d] for d in datasets}, **train},
               "complete": False, "rows": []}
    for k in range(1, iterations + 1):  # rounds outermost: a stopped run has every seed's earlier rounds
        for dataset in datasets:
            for seed in seeds:
                comparison = compare_methods(dataset, out_dir=Path(work) / dataset / f"seed_{seed}",
                                             seed_size=seed_sizes[dataset], iterations=k, test_size=test_size,
                                             teacher=teacher, student=student, seed=seed, progress=progress,
                                             **train)
                results["rows"] += grid_rows(comparison, dataset=dataset, seed=seed, iteration=k)
                atomic_write_json(out, results)
    results["complete"] = True
    atomic_write_json(out, results)
    return results


def add_arguments_llm2llm_grid(parser) -> None:
    parser.add_argument("--datasets", default="trec,sst2,snips", help="comma-separated: sst2, trec, snips, casehold")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated random seeds (seed set and training)")
    parser.add_argument("--iterations", type=int, default=3, help="LLM2LLM rounds K (rows for iterations 0 … K)")
    parser.add_argument("--seed-sizes", default="",
                        help="e.g. trec=55,sst2=606 (default: ~1 %% of each training split, see DEFAULT_SEED_SIZES)")
    parser.add_argument("--test-size", type=int, default=None, help="first N test items (default: the whole test set)")
    parser.add_argument("--teacher", default=None, help="default: the task's offline stand-in")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-layers", type=int, default=None, help="train only the top N blocks (CPU speed knob)")
    parser.add_argument("--evaluate-on", default="train", choices=["train", "seed"])
    parser.add_argument("--work", default="runs/llm2llm_grid", help="run folders (resumable)")
    parser.add_argument("--out", default="results/llm2llm_classification_grid.json")


def main_llm2llm_grid(args) -> int:
    from ..common.checks import at_least, check_output_file, check_output_folder
    from ..common.teacher import check_teacher
    from .task import TASKS

    at_least(args, 1, "iterations", "test_size", "batch_size", "train_layers")
    at_least(args, 0, "lr")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in TASKS or d == "gsm8k"]
    if not datasets or unknown:
        raise SystemExit(f"--datasets {args.datasets!r}: choose from sst2, trec, snips, casehold")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        sizes = {k.strip(): int(v) for k, _, v in (item.partition("=") for item in args.seed_sizes.split(",")
                                                     if item.strip())}
    except ValueError as err:
        raise SystemExit(f"--seeds / --seed-sizes: whole numbers, e.g. --seeds 0,1,2 --seed-sizes trec=55 ({err})")
    if not seeds:
        raise SystemExit("--seeds names no seed")
    if any(n < 1 for n in sizes.values()) or set(sizes) - set(DEFAULT_SEED_SIZES):
        raise SystemExit(f"--seed-sizes {args.seed_sizes!r}: DATASET=N with N ≥ 1, datasets "
                         f"{', '.join(DEFAULT_SEED_SIZES)}")
    check_output_file(args.out)
    check_output_folder(args.work, "--work")
    if args.teacher is not None:
        check_teacher(args.teacher)
    results = run_grid(datasets, seeds, iterations=args.iterations, out=args.out, work=args.work,
                       seed_sizes=sizes, test_size=args.test_size, teacher=args.teacher,
                       command="python -m helpers " + " ".join(getattr(args, "argv", None) or []),
                       epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, train_layers=args.train_layers,
                       evaluate_on=args.evaluate_on)
    print(f"wrote {args.out}: {len(results['rows'])} rows")
    return 0
