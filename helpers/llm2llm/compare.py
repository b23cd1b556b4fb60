"""Chapter 08's comparison at an equal data budget: seed-only fine-tuning, LLM2LLM, AugGPT and EDA."""
from __future__ import annotations

from .classification import make_task

# ----------------------------------------------------------------------------------------------------
# The chapter's comparison: seed-only vs LLM2LLM vs AugGPT vs EDA at an equal data budget
# ----------------------------------------------------------------------------------------------------
METHODS = ("seed-only", "llm2llm", "auggpt", "eda")


def compare_methods(dataset: str, *, out_dir, seed_size: int, iterations: int, test_size: int | None = None,
                    teacher=None, student=None, epochs: float = 3, lr: float = 5e-5, batch_size: int = 8,
                    max_length: int = 512, train_layers: int | None = None, per_wrong: int = 1,
                    evaluate_on: str = "train", teacher_max_new_tokens: int = 128, seed: int = 0,
                    progress: bool = True) -> dict:
    """Run LLM2LLM on ``dataset`` and its baselines at an equal data budget; returns (and writes
    ``out_dir/comparison.json``) ``{"dataset", "budget", "methods": {name: {"train_size", "test_accuracy", …}}}``.

    * **seed-only** — the LLM2LLM run's iteration 0 (the same student trained on the seeds alone);
    * **llm2llm** — :func:`helpers.llm2llm.loop.run_llm2llm` for ``iterations`` rounds (``out_dir/llm2llm``);
    * **auggpt** — the teacher rephrases every seed (:func:`helpers.llm2llm.auggpt.auggpt`) until it has added as many
      examples as LLM2LLM did (``budget``);
    * **eda** — :func:`helpers.llm2llm.eda.augment` adds ``budget`` EDA variants of the seeds.

    Every student starts from the same base model with the same training settings and seed; the augmented
    ones train on ``seed_size + budget`` examples. Each finished method is saved under ``out_dir`` and logged
    to ``out_dir/comparison_log.jsonl`` (a :class:`helpers.common.io.RunLog` hashed over all these settings); a rerun
    with the same settings reuses it, a rerun with other settings computes it again. ``student``: an already
    loaded ``(model, tokenizer)`` (never modified); ``teacher``: a :class:`~helpers.common.teacher.Teacher` or a name
    (default: the task's offline stand-in).
    """
    from pathlib import Path

    from ..common.io import RunLog, atomic_write_json, read_jsonl, write_jsonl
    from ..common.models import load_model
    from ..common.teacher import Teacher, get_teacher
    from ..common.training import finetune
    from .auggpt import auggpt
    from .eda import augment
    from .loop import run_llm2llm

    out_dir = Path(out_dir)
    task = make_task(dataset)
    if student is None:
        student = load_model()
    base_model, tokenizer = student
    teacher = teacher or task.default_teacher
    run_dir = out_dir / "llm2llm"
    log = RunLog.open(out_dir / "comparison_log.jsonl", {
        "dataset": dataset, "seed_size": seed_size, "iterations": iterations, "test_size": test_size,
        "teacher": teacher if isinstance(teacher, str) else getattr(teacher, "name", type(teacher).__name__),
        "student": getattr(base_model, "name_or_path_for_course", None), "epochs": epochs, "lr": lr,
        "batch_size": batch_size, "max_length": max_length, "train_layers": train_layers, "per_wrong": per_wrong,
        "evaluate_on": evaluate_on, "teacher_max_new_tokens": teacher_max_new_tokens, "seed": seed})
    summary = run_llm2llm(task, teacher, seed_size=seed_size, iterations=iterations, out_dir=run_dir,
                          per_wrong=per_wrong, test_size=test_size, student=student, epochs=epochs, lr=lr,
                          batch_size=batch_size, max_length=max_length, train_layers=train_layers,
                          evaluate_on=evaluate_on, teacher_max_new_tokens=teacher_max_new_tokens, seed=seed,
                          progress=progress)
    seeds = list(read_jsonl(run_dir / "seed.jsonl"))
    entries = summary["iterations"]
    budget = entries[-1]["train_size"] - entries[0]["train_size"]
    test = task.load("test", test_size)
    teacher_obj = teacher if isinstance(teacher, Teacher) else (
        get_teacher(teacher, model=base_model, tokenizer=tokenizer) if teacher in ("embedded", None)
        else get_teacher(teacher))

    def train_and_test(method: str, examples: list[dict]) -> dict:
        path = out_dir / method / "result.json"
        if method in log:
            return log.get(method)["result"]
        write_jsonl(out_dir / method / "train.jsonl", examples)
        model = finetune(base_model, [{"prompt": task.prompt(r), "response": task.target(r)} for r in examples],
                         tokenizer=tokenizer, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
                         train_layers=train_layers, seed=seed, progress=progress, desc=f"{method}: fine-tuning")
        predictions = task.predict(model, tokenizer, test, progress=progress, desc=f"{method}: test")
        write_jsonl(out_dir / method / "test_predictions.jsonl", predictions)
        del model
        correct = sum(p["correct"] for p in predictions)
        result = {"train_size": len(examples), "added": len(examples) - len(seeds),
                  "test_accuracy": correct / max(1, len(test)), "test_correct": correct}
        atomic_write_json(path, result)
        log.append({"result": result}, key=method)
        return result

    methods = {
        "seed-only": {"train_size": entries[0]["train_size"], "added": 0,
                      "test_accuracy": entries[0]["test_accuracy"], "test_correct": entries[0]["test_correct"]},
        "llm2llm": {"train_size": entries[-1]["train_size"], "added": budget,
                    "test_accuracy": entries[-1]["test_accuracy"], "test_correct": entries[-1]["test_correct"],
                    "per_iteration": [e["test_accuracy"] for e in entries]},
    }
    aug_path = out_dir / "auggpt" / "examples.jsonl"
    if aug_path.exists() and "auggpt examples" in log:
        rephrased = list(read_jsonl(aug_path))
    else:
        teacher_obj.log_path = out_dir / "auggpt" / "teacher_log.jsonl"
        result = auggpt(task, [{k: v for k, v in s.items() if k != "origin"} for s in seeds], teacher_obj, budget,
                        seed=seed, max_new_tokens=teacher_max_new_tokens, progress=progress)
        write_jsonl(out_dir / "auggpt" / "rejected.jsonl", result["rejected"])
        rephrased = result["examples"]
        write_jsonl(aug_path, rephrased)
        log.append({"n": len(rephrased)}, key="auggpt examples")
    methods["auggpt"] = train_and_test("auggpt", seeds + rephrased)
    methods["eda"] = train_and_test("eda", seeds + augment(seeds, budget, seed=seed, key=task.key))
    comparison = {"dataset": dataset, "seed_size": len(seeds), "iterations": iterations, "budget": budget,
                  "test_size": len(test), "teacher": summary["teacher"], "methods": methods,
                  "hardware": summary.get("hardware")}
    atomic_write_json(out_dir / "comparison.json", comparison)
    return comparison
