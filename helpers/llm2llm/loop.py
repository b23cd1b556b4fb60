"""LLM2LLM (Lee et al., 2024): iterative, teacher-driven data augmentation — the loop.

The method, for a student model, a teacher and a small *seed* set ``D_0``::

    D = D_0
    for i in 0 .. K:
        M_i  = finetune(base model, D)           # from scratch each iteration (continued training optional)
        test accuracy of M_i                     # iteration 0 is the seed-only baseline
        if i < K:
            W_i = examples of D that M_i gets wrong, *restricted to seed-origin ones*
            A_i = teacher(W_i)                   # new examples written from wrong seeds, never from generated ones
            D   = D + verified(A_i)

:func:`run_llm2llm` runs it (one augmentation round is :func:`helpers.llm2llm.round.llm2llm_round`) for any :class:`helpers.llm2llm.task.Task` (GSM8K here, the classification sets of
chapter 08 in :mod:`helpers.llm2llm.classification`). Every iteration is saved atomically under ``out_dir`` —
``iteration_NN/{train.jsonl, test_predictions.jsonl, train_predictions.jsonl, teacher_log.jsonl,
new_examples.jsonl, rejected.jsonl, metrics.json}`` plus ``summary.json`` — and a rerun continues after
the last finished iteration (an interrupted run resumes to the same summary; raising ``--iterations``
extends a finished run).

Every teacher reply is verified before it joins the training data: the task's parser checks it (for
GSM8K: calculator annotations and final answer recomputed by :mod:`helpers.llm2llm.arithmetic`), then
:func:`helpers.llm2llm.round.verify_new_examples` drops test questions, exact duplicates and near-copies
(ROUGE-L ≥ 0.95 against the training data), and logs each rejection with its reason.

Command line::

    python -m helpers llm2llm --dataset gsm8k --seed-size 74 --iterations 3 --test-size 200 --out runs/gsm8k
    python -m helpers gsm8k-eval --data test --limit 100 --out results.json
    python -m helpers gsm8k-eval --data test --backend openai:MODEL --concurrency 8 --out results.json  # a server
    python -m helpers llm2llm --dataset gsm8k … --backend openai:students   # predictions by a server (see run_llm2llm)
"""
from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

from ..common.distributed import broadcast_from_main, is_main_process, rank_folder, sharded_work, world_size
from ..common.io import atomic_write_json, write_jsonl
from .round import llm2llm_round
from .run_folder import (
    _iteration_dir,
    _load_saved_student,
    _open_run_log,
    _read_records,
    _save_model_atomically,
    _student_dir,
    _write_summary,
)
from .task import Task, check_seed_size, get_task


def sample_seeds(task: Task, records: list[dict], seed_size: int, seed: int) -> list[dict]:
    """A seeded subsample of the training split (the task may define ``sample_seeds`` itself, e.g. stratified)."""
    custom = getattr(task, "sample_seeds", None)
    if callable(custom):
        return [dict(r) for r in custom(records, seed_size, seed)]
    check_seed_size(task.name, seed_size, len(records))
    indices = sorted(random.Random(seed).sample(range(len(records)), seed_size))
    return [dict(records[i]) for i in indices]


def run_llm2llm(
    task: Task | str,
    teacher=None,
    *,
    seed_size: int,
    iterations: int,
    out_dir: str | os.PathLike,
    per_wrong: int = 1,
    test_size: int | None = None,
    student_name: str | None = None,
    epochs: float = 3,
    lr: float = 5e-5,
    batch_size: int = 8,
    grad_accum: int = 1,
    lr_schedule: str = "linear",
    warmup_ratio: float = 0.03,
    max_length: int = 512,
    lora: bool = False,
    train_layers: int | None = None,
    continue_training: bool = False,
    evaluate_on: str = "train",
    teacher_temperature: float = 0.7,
    teacher_max_new_tokens: int | None = None,
    dedup_threshold: float = 0.95,
    eval_batch_size: int = 8,
    seed: int = 0,
    device: str | None = None,
    student=None,
    zero_shot: bool = False,
    save_model: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    backend=None,
    save_steps: int | None = None,
) -> dict:
    """Run (or resume) LLM2LLM and return the summary that is also written to ``out_dir/summary.json``.

    ``task``: a :class:`~helpers.llm2llm.task.Task` or a ``--dataset`` name. ``teacher``: a
    :class:`~helpers.common.teacher.Teacher`, a name for :func:`~helpers.common.teacher.get_teacher`, or ``None`` for the
    task's ``default_teacher`` (GSM8K: the offline ``"programmatic-gsm8k"``). ``iterations=K`` trains
    ``K + 1`` students: iteration 0 on the seeds only (the baseline), then one per augmentation round.
    ``per_wrong`` teacher replies are requested per wrongly answered seed example. ``evaluate_on``:
    ``"train"`` (the current training data, as in the paper; only seed-origin mistakes reach the teacher)
    or ``"seed"`` (only the seed examples: cheaper, same teacher input). ``student``: an already loaded
    ``(model, tokenizer)`` used as the base (never modified). ``save_model=True`` keeps the newest student
    in ``out_dir/student_NN`` (always kept with ``continue_training``, which resumes from it). ``stop_after=i`` stops once iteration ``i``
    is saved (to test resuming). The remaining knobs go to :func:`helpers.common.training.finetune`.
    ``backend``: a :class:`helpers.common.backend.ServerBackend` whose server generates the students' predictions
    (GSM8K only). Each student is saved under ``out_dir/.served/`` (a new folder name every time, since a
    server keeps models loaded by path) and requested by that folder's absolute path, so the server must load
    models by path on request and see this filesystem: ``transformers serve`` started without a model does;
    vLLM and SGLang serve one fixed model and do not. Training stays in this process.
    ``save_steps=N``: every fine-tuning saves a ``Trainer`` checkpoint each ``N`` updates in
    ``out_dir/checkpoints/iteration_NN`` and a rerun resumes an interrupted fine-tuning from its newest one
    (the ``Trainer`` engine then trains in one process too; equal to the plain loop within float rounding).
    """
    from ..common.config import set_seed
    from ..common.models import EMBEDDED_ALIASES, load_model
    from ..common.results import hardware
    from ..common.teacher import Teacher, get_teacher
    from ..common.training import finetune

    if isinstance(task, str):
        task = get_task(task)
    if evaluate_on not in ("train", "seed"):
        raise ValueError(f"evaluate_on must be 'train' or 'seed', got {evaluate_on!r}")
    if seed_size < 1 or iterations < 0 or per_wrong < 1:
        raise ValueError("seed_size and per_wrong must be ≥ 1 and iterations ≥ 0")
    if test_size is not None and test_size < 1:
        raise ValueError(f"test_size (--test-size) must be ≥ 1, got {test_size}")
    if teacher_max_new_tokens is None:  # the task's reply budget: one classification example, one GSM8K problem
        teacher_max_new_tokens = getattr(task, "teacher_max_new_tokens", 512)
    if lr_schedule not in ("linear", "cosine") or grad_accum < 1 or not 0 <= warmup_ratio < 1:
        raise ValueError(f"lr_schedule (--lr-schedule) linear or cosine, grad_accum ≥ 1 and 0 ≤ warmup_ratio < 1; got "
                         f"{lr_schedule!r}, {grad_accum}, {warmup_ratio}")
    if teacher_max_new_tokens < 1:
        raise ValueError(f"teacher_max_new_tokens (--teacher-max-new-tokens) must be ≥ 1, got {teacher_max_new_tokens}")
    if backend is not None:
        check_backend_task(task, lora)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: is a file; the run folder (--out) must be a folder")
    if save_steps is not None and save_steps < 1:
        raise ValueError(f"save_steps (--save-steps) must be ≥ 1, got {save_steps}")
    checkpoints = out_dir / "checkpoints"  # the real --out on every rank: all ranks resume the same checkpoint
    if world_size() > 1:
        if batch_size % world_size():
            raise ValueError(f"batch_size (--batch-size) {batch_size} must be a multiple of the {world_size()} "
                             "processes: each rank trains batch_size / processes of every batch")
        out_dir = rank_folder(out_dir)  # rank 0 writes --out; the other ranks a private copy of it
    teacher_name = teacher.name if isinstance(teacher, Teacher) else (teacher or getattr(task, "default_teacher", None)
                                                                       or "embedded")
    config = {"task": task.name, "seed_size": seed_size, "iterations": iterations, "seed": seed,
              "per_wrong": per_wrong, "test_size": test_size,
              "student": student_name or getattr(student[0] if student else None, "name_or_path_for_course", None)
              or "smollm2-135m-instruct",
              "teacher": teacher_name, "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length,
              "lora": lora, "train_layers": train_layers, "continue_training": continue_training,
              "evaluate_on": evaluate_on, "teacher_temperature": teacher_temperature,
              "dedup_threshold": dedup_threshold, "max_new_tokens": getattr(task, "max_new_tokens", None),
              "teacher_max_new_tokens": teacher_max_new_tokens, "grad_accum": grad_accum, "lr_schedule": lr_schedule,
              "warmup_ratio": warmup_ratio, "dedup_on": getattr(task, "dedup_on", None),
              "world_size": world_size()}
    # Everything is checked before anything is written or loaded: the folder's settings, the teacher, the data.
    from ..common.teacher import check_teacher

    config_path = out_dir / "config.json"
    log = _open_run_log(out_dir, config)
    check_teacher(teacher if isinstance(teacher, Teacher) else teacher_name)

    # Data: seeds from train, the first test_size test records; no test question may ever be trained on.
    train_all = task.load("train")
    test_all = task.load("test")
    for split, rows in (("training", train_all), ("test", test_all)):
        if not rows:
            raise ValueError(f"the {task.name} {split} split is empty: nothing to {'train' if split == 'training' else 'test'} on")
    if test_size is not None and test_size > len(test_all):
        raise ValueError(f"test size {test_size} (--test-size) is more than the {len(test_all)} records of the "
                         f"{task.name} test split")
    test_keys = {task.key(r) for r in test_all}
    test = test_all if test_size is None else test_all[:test_size]
    seed_path = out_dir / "seed.jsonl"
    if seed_path.exists() and "seeds" in log:
        seeds = _read_records(seed_path)
        new_seeds = False
    else:
        candidates = [r for r in train_all if task.key(r) not in test_keys]
        seeds = [dict(r, origin="seed") for r in sample_seeds(task, candidates, seed_size, seed)]
        new_seeds = True
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, config)
    if new_seeds:
        write_jsonl(seed_path, seeds)
        log.append({"n": len(seeds)}, key="seeds")

    # Models: the base student (loaded once, never modified) and the teacher.
    if student is not None:
        base_model, tokenizer = student
    else:
        import torch

        base_model, tokenizer = load_model(student_name, device=device,
                                           dtype=None if lora else torch.float32)
    if isinstance(teacher, Teacher):
        teacher_obj = teacher
    elif teacher_name in ("embedded", "smollm2-135m-instruct") and \
            getattr(base_model, "name_or_path_for_course", None) in EMBEDDED_ALIASES:
        teacher_obj = get_teacher(teacher_name, model=base_model, tokenizer=tokenizer)
    else:
        teacher_obj = get_teacher(teacher_name)

    def train(records: list[dict], previous=None, i: int = 0):
        examples = [{"prompt": task.prompt(r), "response": task.target(r)} for r in records]
        leaked = [r for r in records if task.key(r) in test_keys]
        if leaked:  # the loop never lets this happen; fail loudly if a bug ever does
            raise RuntimeError(f"iteration {i}: {len(leaked)} training records are test questions")
        start_model = previous if (continue_training and previous is not None) else base_model
        return finetune(start_model, examples, tokenizer=tokenizer, epochs=epochs, lr=lr, batch_size=batch_size,
                        grad_accum=grad_accum, lr_schedule=lr_schedule, warmup_ratio=warmup_ratio,
                        max_length=max_length, lora=lora, train_layers=train_layers, seed=seed,
                        system=getattr(task, "system", None),
                        inplace=start_model is previous, progress=progress, desc=f"iteration {i}: fine-tuning",
                        **({"checkpoint_dir": checkpoints / f"iteration_{i:02d}", "save_steps": save_steps}
                           if save_steps else {}))

    summary = {"task": task.name, "teacher": teacher_obj.name, "config": config, "iterations": [], "timing": []}
    if zero_shot:
        zs_path = out_dir / "zero_shot_predictions.jsonl"
        if zs_path.exists() and "zero_shot" in log:
            zs = _read_records(zs_path)
        else:
            set_seed(seed)
            base = _served(backend, base_model, tokenizer, out_dir, "base",
                           path=_model_path(student_name) if backend is not None and student is None else None)
            with sharded_work():  # under torchrun each rank predicts its share of the batches
                zs = task.predict(base, tokenizer, test, batch_size=eval_batch_size, progress=progress)
            write_jsonl(zs_path, zs)
            log.append({"test_correct": sum(p["correct"] for p in zs), "test_size": len(zs)}, key="zero_shot")
        summary["zero_shot_test_accuracy"] = sum(p["correct"] for p in zs) / max(1, len(zs))

    current = seeds
    model = None
    for i in range(iterations + 1):
        folder = _iteration_dir(out_dir, i)
        metrics_path = folder / "metrics.json"
        metrics = log.get(folder.name)  # {"summary", "timing", "augmented"} of a finished iteration
        augment = i < iterations
        if metrics is not None and (metrics["augmented"] or not augment):
            current = _read_records(folder / "train.jsonl")
            if metrics["augmented"]:
                next_data = current + _read_records(folder / "new_examples.jsonl")
            else:
                next_data = current
            summary["iterations"].append(metrics["summary"])
            summary["timing"].append(metrics["timing"])
            if continue_training:
                model = None  # reloaded from student_last when needed
            current = next_data
            if stop_after is not None and i >= stop_after:
                break
            continue

        timing = {"iteration": i}
        if metrics is None:  # a fresh iteration (a half-written one is redone from its start)
            if folder.exists():
                stale = folder / "teacher_log.jsonl"
                if stale.exists():
                    stale.rename(out_dir / f"teacher_log.interrupted.{i:02d}.{int(time.time())}.jsonl")
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            write_jsonl(folder / "train.jsonl", current)
            if continue_training and i > 0 and model is None:
                model = _load_saved_student(_student_dir(out_dir, i - 1), base_model)
            started = time.time()
            model = train(current, previous=model, i=i)
            timing["train_s"] = round(time.time() - started, 1)
            started = time.time()
            predictor = _served(backend, model, tokenizer, out_dir, f"student_{i:02d}")
            with sharded_work() as sharding:
                predictions = task.predict(predictor, tokenizer, test, batch_size=eval_batch_size, progress=progress)
            if world_size() > 1:
                timing["test_predicted_per_rank"] = sharding.per_rank
            write_jsonl(folder / "test_predictions.jsonl", predictions)
            timing["test_eval_s"] = round(time.time() - started, 1)
            correct = sum(bool(p["correct"]) for p in predictions)
            entry = {"iteration": i, "train_size": len(current),
                     "seed_examples": sum(r.get("origin") == "seed" for r in current),
                     "generated_examples": sum(r.get("origin") == "generated" for r in current),
                     "wrong": None, "wrong_seed": None, "evaluated": None, "new_examples": None, "rejected": None,
                     "test_accuracy": correct / max(1, len(test)), "test_correct": correct, "test_size": len(test)}
        else:  # trained and tested as the last iteration of a shorter run; now extended: augment it
            entry, timing = dict(metrics["summary"]), dict(metrics["timing"])
            current = _read_records(folder / "train.jsonl")
            if continue_training:
                model = _load_saved_student(_student_dir(out_dir, i), base_model)
            else:  # retraining from the base model with the same seed gives the same student
                model = train(current, previous=None, i=i)
            predictor = _served(backend, model, tokenizer, out_dir, f"student_{i:02d}") if augment else model

        if augment:
            entry, aug_timing = _augment(task, teacher_obj, predictor, tokenizer, current, test_keys, folder, entry,
                                         per_wrong=per_wrong, evaluate_on=evaluate_on,
                                         temperature=teacher_temperature, max_new_tokens=teacher_max_new_tokens,
                                         dedup_threshold=dedup_threshold, eval_batch_size=eval_batch_size,
                                         seed=seed + i, progress=progress)
            timing.update(aug_timing)
            new = _read_records(folder / "new_examples.jsonl")
            if world_size() > 1:  # every rank goes on with rank 0's round, so the ranks never diverge
                entry, timing, new = broadcast_from_main((entry, timing, new))
                if not is_main_process():
                    write_jsonl(folder / "new_examples.jsonl", new)
        else:
            new = []
        if continue_training or save_model:
            _save_model_atomically(model, tokenizer, _student_dir(out_dir, i))
        metrics = {"summary": entry, "timing": timing, "augmented": augment}
        atomic_write_json(metrics_path, metrics)
        log.append(metrics, key=folder.name)
        if i > 0 and _student_dir(out_dir, i - 1).exists():  # keep only the newest student
            shutil.rmtree(_student_dir(out_dir, i - 1))
        summary["iterations"].append(entry)
        summary["timing"].append(timing)
        summary["complete"] = False
        _write_summary(out_dir, summary, iterations, hardware())
        current = current + new
        if not continue_training:
            del model
            model = None
        if stop_after is not None and i >= stop_after:
            break
    shutil.rmtree(out_dir / ".served", ignore_errors=True)
    if is_main_process() and checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()  # every fine-tuning finished (each removes its own checkpoints)
    return _write_summary(out_dir, summary, iterations, hardware())


def _augment(task, teacher, model, tokenizer, current, test_keys, folder, entry, *, per_wrong, evaluate_on,
             temperature, max_new_tokens, dedup_threshold, eval_batch_size, seed, progress):
    """:func:`llm2llm_round` with its files in ``folder`` and its counts in the iteration's ``entry``."""
    teacher.log_path = folder / "teacher_log.jsonl"
    with sharded_work() as sharding:  # the predictions split over the ranks, the teacher on rank 0 alone
        done = llm2llm_round(task, teacher, model, tokenizer, current, test_keys, iteration=entry["iteration"],
                             per_wrong=per_wrong, evaluate_on=evaluate_on, temperature=temperature,
                             max_new_tokens=max_new_tokens, dedup_threshold=dedup_threshold,
                             batch_size=eval_batch_size, seed=seed, progress=progress)
    if world_size() > 1:
        done.timing["train_predicted_per_rank"] = sharding.per_rank
    write_jsonl(folder / "train_predictions.jsonl",
                [dict(p, origin=r.get("origin"), key=task.key(r)) for r, p in zip(done.evaluated, done.predictions)])
    write_jsonl(folder / "rejected.jsonl", done.rejected)
    write_jsonl(folder / "new_examples.jsonl", done.accepted)
    entry = dict(entry, wrong=len(done.wrong), wrong_seed=len(done.wrong_seeds), evaluated=len(done.evaluated),
                 train_accuracy=1 - len(done.wrong) / max(1, len(done.evaluated)), teacher_requests=len(done.prompts),
                 new_examples=len(done.accepted), rejected=len(done.rejected),
                 teacher_replies_accepted=done.replies_accepted,
                 teacher_acceptance_rate=done.acceptance_rate, rejected_replies=done.rejection_reasons())
    agreement = getattr(task, "label_agreement", None)
    if callable(agreement):  # a diagnostic (never a filter): do the new examples carry the label an oracle gives?
        entry["teacher_label_agreement"] = agreement(done.accepted)
    return entry, done.timing


def check_backend_task(task: Task, lora: bool = False) -> None:
    """``ValueError`` unless ``task``'s predictions can come from a generation server (GSM8K, full models)."""
    if not getattr(task, "predicts_by_generation", False):
        raise ValueError(f"--backend: the {task.name} task scores its labels in this process (no generation); "
                         "only gsm8k predicts through a generation server")
    if lora:
        raise ValueError("--backend with --lora: the server loads a full model folder per student; drop --lora")


def _served(backend, model, tokenizer, out_dir: Path, label: str, path: str | None = None):
    """What predictions come from: ``model`` in-process, or (with a ``backend``) the server loading ``path``,
    else a copy of ``model`` saved as ``out_dir/.served/LABEL_<ns>`` (a new name each time: a server keeps
    models loaded by path). Earlier copies are deleted: the server has loaded them or is done with them."""
    if backend is None:
        return model
    if path is not None:
        return backend.with_model(path)
    served = out_dir / ".served"
    shutil.rmtree(served, ignore_errors=True)
    target = served / f"{label}_{time.time_ns()}"
    _save_model_atomically(model, tokenizer, target)
    return backend.with_model(str(target.resolve()))


def _model_path(name: str | None) -> str:
    """A model name as a server loads it: an absolute folder path, or a hub id."""
    from ..common.models import resolve_model_path

    path = resolve_model_path(name)
    return str(Path(path).expanduser().resolve()) if Path(path).expanduser().is_dir() else path
