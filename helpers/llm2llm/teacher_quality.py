"""``python -m helpers llm2llm-teacher-quality``: how much of a teacher's data is usable, and is it labelled right?

For finished LLM2LLM run folders (``llm2llm`` or ``llm2llm-grid`` runs of a classification task), it takes
the seed examples the iteration-``k`` student got wrong — exactly the teacher's input in that run — and asks
each named teacher for new examples from them (the round's own prompts: few-shot turns for a language model,
the instruction for the offline stand-in), verifies the replies as the loop does, and reports per teacher:

* ``acceptance_rate``: the share of replies that gave an accepted example, with the rejected replies by reason;
* ``label_agreement``: the share of accepted examples whose label an oracle trained on the full training split
  agrees with (:mod:`helpers.llm2llm.oracle`; a diagnostic, not a filter).

No student is trained: the comparison holds the teacher's input fixed. Rows are written atomically after
each (run, teacher) cell, and a rerun skips the cells already in ``--out``::

    python -m helpers llm2llm-teacher-quality --runs results/_runs/llm2llm_grid/trec/seed_0/llm2llm \\
        --teachers offline-classification,embedded --out results/llm2llm_teacher_quality.json
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path

from ..common.io import read_json, read_jsonl


def wrong_seeds_of(task, run_dir: Path, iteration: int = 0) -> tuple[list, list]:
    """``(data, wrong_seeds)`` of iteration ``iteration`` of a run folder: its training data and the
    ``(record, prediction)`` pairs of the seed examples its student got wrong."""
    folder = run_dir / f"iteration_{iteration:02d}"
    data = list(read_jsonl(folder / "train.jsonl"))
    predictions = {p["key"]: p for p in read_jsonl(folder / "train_predictions.jsonl")}
    wrong = [(r, predictions[task.key(r)]) for r in data if r.get("origin") == "seed"
             and task.key(r) in predictions and not predictions[task.key(r)]["correct"]]
    return data, wrong


def measure(run_dir, teacher_name: str, *, iteration: int = 0, max_new_tokens: int | None = None) -> dict:
    """One row: ``teacher_name``'s replies to the wrong seeds of ``run_dir``'s iteration ``iteration``."""
    from ..common.teacher import get_teacher
    from .round import Round, teach
    from .task import get_task

    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json", "run configuration")
    task = get_task(config["task"])  # a fresh task: its duplicate memory starts empty
    test_keys = {task.key(r) for r in task.load("test")}
    data, wrong = wrong_seeds_of(task, run_dir, iteration)
    teacher = get_teacher(teacher_name)
    started = time.time()
    prompts, replies, accepted, rejected, outcomes = teach(
        task, teacher, wrong, data, test_keys, iteration=iteration + 1, per_wrong=config.get("per_wrong", 1),
        temperature=config.get("teacher_temperature", 0.7), seed=config.get("seed", 0),
        max_new_tokens=max_new_tokens or getattr(task, "teacher_max_new_tokens", 512))
    done = Round([], [], wrong, wrong, prompts, replies, accepted, rejected, outcomes=outcomes)
    return {"dataset": task.name, "run": run_dir.as_posix(), "iteration": iteration, "teacher": teacher.name,
            "prompt_style": getattr(teacher, "prompt_style", "few-shot"), "requests": len(prompts),
            "replies_accepted": done.replies_accepted, "acceptance_rate": done.acceptance_rate,
            "new_examples": len(accepted), "rejected_replies": done.rejection_reasons(),
            "label_agreement": task.label_agreement(accepted), "seconds": round(time.time() - started, 1),
            "examples": [{"parent": r["parent"], "text": r["text"], "label": r["label"]} for r in accepted[:5]]}


def add_arguments_llm2llm_teacher_quality(parser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, help="finished LLM2LLM run folders (classification)")
    parser.add_argument("--teachers", default="offline-classification,embedded",
                        help="comma-separated teachers (names as for llm2llm --teacher)")
    parser.add_argument("--iteration", type=int, default=0, help="whose student's mistakes (default 0: the seed-only one)")
    parser.add_argument("--teacher-max-new-tokens", type=int, default=None, help="default: the task's")
    parser.add_argument("--out", default="results/llm2llm_teacher_quality.json")


def main_llm2llm_teacher_quality(args) -> int:
    from ..common.checks import at_least, check_output_file
    from ..common.io import atomic_write_json
    from ..common.results import hardware
    from ..common.teacher import check_teacher
    from .task import TASKS

    at_least(args, 0, "iteration")
    at_least(args, 1, "teacher_max_new_tokens")
    teachers = [t.strip() for t in args.teachers.split(",") if t.strip()]
    if not teachers:
        raise SystemExit("--teachers names no teacher")
    for run in args.runs:
        folder = Path(run) / f"iteration_{args.iteration:02d}"
        for name in ("train.jsonl", "train_predictions.jsonl"):
            if not (folder / name).is_file():
                raise SystemExit(f"--runs {run}: no {folder / name} (a finished LLM2LLM run folder, "
                                 f"iteration {args.iteration})")
        config = read_json(Path(run) / "config.json", "run configuration")
        if not isinstance(config, dict) or config.get("task") not in TASKS or config.get("task") == "gsm8k":
            raise SystemExit(f"--runs {run}: config.json names no classification task")
    for name in teachers:
        check_teacher(name)
    check_output_file(args.out)
    out = Path(args.out)
    results = read_json(out, "teacher-quality results") if out.exists() else {"rows": []}
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise SystemExit(f"{out}: not a teacher-quality results file (no 'rows' list)")
    done = {(r["run"], r["teacher_arg"], r["iteration"]) for r in results["rows"]}
    results.update(command="python -m helpers " + " ".join(getattr(args, "argv", None) or []),
                   hardware=hardware(), date=datetime.date.today().isoformat())
    for run in args.runs:
        for name in teachers:
            if (Path(run).as_posix(), name, args.iteration) in done:
                continue
            row = measure(run, name, iteration=args.iteration, max_new_tokens=args.teacher_max_new_tokens)
            results["rows"].append({**row, "teacher_arg": name})
            atomic_write_json(out, results)
            agreement = (row["label_agreement"] or {}).get("agreement")
            print(f"{row['dataset']} {run} · {name}: {row['replies_accepted']}/{row['requests']} replies accepted, "
                  f"label agreement {agreement}")
    atomic_write_json(out, results)
    print(f"wrote {out}: {len(results['rows'])} rows")
    return 0
