"""LLM2LLM (Lee et al., 2024): iterative, teacher-driven data augmentation — the loop, GSM8K, the CLIs.

The method, for a student model, a teacher and a small *seed* set ``D_0``::

    D = D_0
    for i in 0 .. K:
        M_i  = finetune(base model, D)           # from scratch each iteration (continued training optional)
        test accuracy of M_i                     # iteration 0 is the seed-only baseline
        if i < K:
            W_i = examples of D that M_i gets wrong, *restricted to seed-origin ones*
            A_i = teacher(W_i)                   # new examples written from wrong seeds, never from generated ones
            D   = D + verified(A_i)

:func:`run_llm2llm` runs it for any :class:`helpers.task.Task` (GSM8K here, the classification sets of
chapter 08 in :mod:`helpers.classification`). Every iteration is saved atomically under ``out_dir`` —
``iteration_NN/{train.jsonl, test_predictions.jsonl, train_predictions.jsonl, teacher_log.jsonl,
new_examples.jsonl, rejected.jsonl, metrics.json}`` plus ``summary.json`` — and a rerun continues after
the last finished iteration (an interrupted run resumes to the same summary; raising ``--iterations``
extends a finished run).

Every teacher reply is verified before it joins the training data: the task's parser checks it (for
GSM8K: calculator annotations and final answer recomputed by :mod:`helpers.arithmetic`), then the loop
drops test questions, exact duplicates and near-copies (ROUGE-L ≥ 0.95 against the training data), and
logs each rejection with its reason.

Command line::

    python -m helpers llm2llm --dataset gsm8k --seed-size 74 --iterations 3 --test-size 200 --out runs/gsm8k
    python -m helpers gsm8k-eval --data test --limit 100 --out results.json
    python -m helpers gsm8k-eval --data test --backend openai:MODEL --concurrency 8 --out results.json  # a server
    python -m helpers llm2llm --dataset gsm8k … --backend openai:students   # predictions by a server (see run_llm2llm)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Sequence

from .arithmetic import ANNOTATION, verify_solution
from .data import answers_match, extract_prediction, load_gsm8k, normalize_number
from .io import atomic_write_json, read_jsonl, write_jsonl
from .gsm8k_teacher import TEACHER_SYSTEM
from .task import Task, check_seed_size, get_task

# ----------------------------------------------------------------------------------------------------
# ROUGE-L, for near-duplicate detection
# ----------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\w+")


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased word and number tokens (punctuation dropped), as ROUGE is usually computed."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, two rows)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str | Sequence[str], reference: str | Sequence[str]) -> float:
    """ROUGE-L F1 between two texts (or token lists): ``2PR/(P+R)`` with P, R = LCS / length."""
    a = rouge_tokens(candidate) if isinstance(candidate, str) else list(candidate)
    b = rouge_tokens(reference) if isinstance(reference, str) else list(reference)
    if not a or not b:
        return 1.0 if a == b else 0.0
    lcs = lcs_length(a, b)
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


class NearDuplicateIndex:
    """Texts seen so far; :meth:`match` finds one with ROUGE-L ≥ ``threshold``.

    Cheap upper bounds skip most pairs: ROUGE-L F1 ≤ ``2·min(m,n)/(m+n)`` (lengths) and ≤ the F1 of the
    bags of tokens, so only plausible near-copies pay for the LCS.
    """

    def __init__(self, threshold: float = 0.95):
        self.threshold = threshold
        self.items: list[tuple[list[str], dict, str]] = []

    def add(self, text: str, label: str = "") -> None:
        tokens = rouge_tokens(text)
        self.items.append((tokens, _bag(tokens), label))

    def match(self, text: str) -> tuple[float, str] | None:
        tokens = rouge_tokens(text)
        bag, n = _bag(tokens), len(tokens)
        for other, other_bag, label in self.items:
            m = len(other)
            if n + m == 0 or 2 * min(n, m) / (n + m) < self.threshold:
                continue
            common = sum(min(c, other_bag.get(t, 0)) for t, c in bag.items())
            if 2 * common / (n + m) < self.threshold:
                continue
            score = rouge_l(tokens, other)
            if score >= self.threshold:
                return score, label
        return None


def _bag(tokens: list[str]) -> dict:
    bag: dict[str, int] = {}
    for t in tokens:
        bag[t] = bag.get(t, 0) + 1
    return bag


# ----------------------------------------------------------------------------------------------------
# GSM8K as an LLM2LLM task
# ----------------------------------------------------------------------------------------------------
STUDENT_INSTRUCTION = "Solve the problem step by step. End with a line '#### N', where N is the final answer."


def strip_annotations(answer: str) -> str:
    """``48/2 = <<48/2=24>>24`` → ``48/2 = 24``: the student learns the reasoning, not calculator calls."""
    return ANNOTATION.sub("", answer).strip()


class GSM8KTask(Task):
    """GSM8K grade-school maths: the student writes a solution ending in ``#### N``; exact-match accuracy.

    ``max_new_tokens`` bounds the student's solutions (256 covers almost all GSM8K solutions);
    ``keep_annotations=False`` trains on solutions without the ``<<…>>`` calculator annotations (shorter,
    and a student has no calculator); the teacher always sees and writes annotated solutions, which is
    what makes its arithmetic verifiable.
    """

    name = "gsm8k"
    default_teacher = "programmatic-gsm8k"
    predicts_by_generation = True  # so its predictions can come from a generation server (--backend)
    teacher_system = TEACHER_SYSTEM

    def __init__(self, max_new_tokens: int = 256, keep_annotations: bool = False,
                 instruction: str = STUDENT_INSTRUCTION, min_question_words: int = 6):
        self.max_new_tokens = max_new_tokens
        self.keep_annotations = keep_annotations
        self.instruction = instruction
        self.min_question_words = min_question_words

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        return load_gsm8k(split, limit)

    def prompt(self, record: dict) -> str:
        question = record["question"].strip()
        return f"{question}\n\n{self.instruction}" if self.instruction else question

    def target(self, record: dict) -> str:
        answer = record["answer"].strip()
        return answer if self.keep_annotations else strip_annotations(answer)

    def key(self, record: dict) -> str:
        return " ".join(record["question"].lower().split())

    def predict(self, model, tokenizer, records, *, batch_size: int = 8, progress: bool = True,
                desc: str = "GSM8K") -> list[dict]:
        from .generation import generate

        outputs = generate(model, tokenizer, [self.prompt(r) for r in records], max_new_tokens=self.max_new_tokens,
                           batch_size=batch_size, progress=progress, desc=desc)
        results = []
        for record, output in zip(records, outputs):
            prediction = extract_prediction(output)
            results.append({"question": record["question"], "gold": record["gold"], "prediction": prediction,
                            "output": output, "correct": answers_match(prediction, record["gold"])})
        return results

    def teacher_prompt(self, record: dict, student_output: str | None = None) -> str:
        from .gsm8k_teacher import teacher_prompt

        return teacher_prompt(record["question"], record["answer"], student_output)

    def parse_teacher_reply(self, reply: str, seed: dict) -> tuple[list[dict], list[dict]]:
        """``Question: … Answer: … #### N`` blocks → verified records and ``{"text", "reason"}`` rejections."""
        accepted, rejected = [], []
        blocks = re.findall(r"Question:\s*(.*?)\s*\n?\s*Answer:\s*(.*?)(?=\n\s*Question:|\Z)", reply or "", flags=re.DOTALL)
        if not blocks:
            detail = (reply or "").strip()
            reason = "no 'Question: … Answer: …' block in the reply"
            if detail.startswith("(") and len(detail) < 300:
                reason += f" {detail}"
            return [], [{"text": reply, "reason": reason}]
        seed_key = self.key(seed)
        for question, answer in blocks:
            question = question.strip()
            answer = _cut_after_final(answer.strip())
            text = f"Question: {question}\nAnswer: {answer}"
            reasons = []
            if len(question.split()) < self.min_question_words:
                reasons.append(f"question too short ({len(question.split())} words)")
            if len(question) > 2000 or len(answer) > 4000:
                reasons.append("question or answer too long")
            if " ".join(question.lower().split()) == seed_key:
                reasons.append("the question is a copy of the seed question")
            check = verify_solution(answer)
            reasons += check.reasons
            if reasons:
                rejected.append({"text": text, "reason": "; ".join(reasons)})
            else:
                accepted.append({"question": question, "answer": answer, "gold": check.final,
                                 "origin": "generated", "parent": seed_key})
        return accepted, rejected


def _cut_after_final(answer: str) -> str:
    """Drop anything a teacher writes after the ``#### N`` line."""
    match = re.search(r"####\s*\$?\s*-?[\d,]*\.?\d+", answer)
    return answer[: match.end()].strip() if match else answer


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------
#: Settings that must match when a run is resumed (``iterations`` may grow): the run hash of the folder's
#: :class:`helpers.io.RunLog` (``OUT/run_log.jsonl``).
RESUME_KEYS = ("task", "seed_size", "seed", "per_wrong", "test_size", "student", "teacher", "epochs", "lr",
               "batch_size", "lora", "train_layers", "continue_training", "evaluate_on", "max_length",
               "teacher_temperature", "dedup_threshold", "max_new_tokens")
RUN_LOG = "run_log.jsonl"


def sample_seeds(task: Task, records: list[dict], seed_size: int, seed: int) -> list[dict]:
    """A seeded subsample of the training split (the task may define ``sample_seeds`` itself, e.g. stratified)."""
    custom = getattr(task, "sample_seeds", None)
    if callable(custom):
        return [dict(r) for r in custom(records, seed_size, seed)]
    check_seed_size(task.name, seed_size, len(records))
    indices = sorted(random.Random(seed).sample(range(len(records)), seed_size))
    return [dict(records[i]) for i in indices]


def _iteration_dir(out_dir: Path, i: int) -> Path:
    return out_dir / f"iteration_{i:02d}"


def _open_run_log(out_dir: Path, config: dict):
    """The run folder's :class:`helpers.io.RunLog`, hashed over :data:`RESUME_KEYS`; its records are the
    finished steps (``seeds``, ``zero_shot``, ``iteration_NN``). A folder that holds a run with other settings
    is refused, naming the first setting that differs. A folder written before the log existed (``config.json``
    and ``metrics.json`` files only) is adopted when its settings are the same. Nothing is written here unless
    such a folder is adopted."""
    from .io import RunLog, read_json

    log = RunLog.open(out_dir / RUN_LOG, {key: config.get(key) for key in RESUME_KEYS})
    config_path = out_dir / "config.json"
    previous = read_json(config_path, "run configuration") if config_path.exists() else None
    if previous is not None and not isinstance(previous, dict):
        raise ValueError(f"{config_path}: not a run configuration (a JSON object)")
    if log.other_runs() or (previous is not None and not log.records() and (out_dir / "seed.jsonl").exists()
                            and any(previous.get(k) != config.get(k) for k in RESUME_KEYS)):
        for key in RESUME_KEYS:
            if previous is not None and previous.get(key) != config.get(key):
                raise ValueError(f"{config_path}: this run used {key}={previous.get(key)!r}, now "
                                 f"{key}={config.get(key)!r}; use another --out folder or the same settings to resume")
        raise ValueError(f"{out_dir / RUN_LOG}: this folder holds a run with other settings; use another --out "
                         "folder or the same settings to resume")
    if previous is not None and not log.records() and (out_dir / "seed.jsonl").exists():
        log.append({"n": None, "adopted": True}, key="seeds")  # an older run folder with the same settings
        if (out_dir / "zero_shot_predictions.jsonl").exists():
            log.append({"adopted": True}, key="zero_shot")
        i = 0
        while (_iteration_dir(out_dir, i) / "metrics.json").exists():
            log.append(read_json(_iteration_dir(out_dir, i) / "metrics.json", "metrics file"),
                       key=_iteration_dir(out_dir, i).name)
            i += 1
    return log


def _read_records(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; the run folder is incomplete (delete it to start over)")
    return list(read_jsonl(path))


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
    max_length: int = 512,
    lora: bool = False,
    train_layers: int | None = None,
    continue_training: bool = False,
    evaluate_on: str = "train",
    teacher_temperature: float = 0.7,
    teacher_max_new_tokens: int = 512,
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
) -> dict:
    """Run (or resume) LLM2LLM and return the summary that is also written to ``out_dir/summary.json``.

    ``task``: a :class:`~helpers.task.Task` or a ``--dataset`` name. ``teacher``: a
    :class:`~helpers.teacher.Teacher`, a name for :func:`~helpers.teacher.get_teacher`, or ``None`` for the
    task's ``default_teacher`` (GSM8K: the offline ``"programmatic-gsm8k"``). ``iterations=K`` trains
    ``K + 1`` students: iteration 0 on the seeds only (the baseline), then one per augmentation round.
    ``per_wrong`` teacher replies are requested per wrongly answered seed example. ``evaluate_on``:
    ``"train"`` (the current training data, as in the paper; only seed-origin mistakes reach the teacher)
    or ``"seed"`` (only the seed examples: cheaper, same teacher input). ``student``: an already loaded
    ``(model, tokenizer)`` used as the base (never modified). ``save_model=True`` keeps the newest student
    in ``out_dir/student_NN`` (always kept with ``continue_training``, which resumes from it). ``stop_after=i`` stops once iteration ``i``
    is saved (to test resuming). The remaining knobs go to :func:`helpers.student.finetune`.
    ``backend``: a :class:`helpers.backend.ServerBackend` whose server generates the students' predictions
    (GSM8K only). Each student is saved under ``out_dir/.served/`` (a new folder name every time, since a
    server keeps models loaded by path) and requested by that folder's absolute path, so the server must load
    models by path on request and see this filesystem: ``transformers serve`` started without a model does;
    vLLM and SGLang serve one fixed model and do not. Training stays in this process.
    """
    from .config import set_seed
    from .models import EMBEDDED_ALIASES, load_model
    from .results import hardware
    from .student import finetune
    from .teacher import Teacher, get_teacher

    if isinstance(task, str):
        task = get_task(task)
    if evaluate_on not in ("train", "seed"):
        raise ValueError(f"evaluate_on must be 'train' or 'seed', got {evaluate_on!r}")
    if seed_size < 1 or iterations < 0 or per_wrong < 1:
        raise ValueError("seed_size and per_wrong must be ≥ 1 and iterations ≥ 0")
    if test_size is not None and test_size < 1:
        raise ValueError(f"test_size (--test-size) must be ≥ 1, got {test_size}")
    if backend is not None:
        check_backend_task(task, lora)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: is a file; the run folder (--out) must be a folder")
    teacher_name = teacher.name if isinstance(teacher, Teacher) else (teacher or getattr(task, "default_teacher", None)
                                                                       or "embedded")
    config = {"task": task.name, "seed_size": seed_size, "iterations": iterations, "seed": seed,
              "per_wrong": per_wrong, "test_size": test_size,
              "student": student_name or getattr(student[0] if student else None, "name_or_path_for_course", None)
              or "smollm2-135m-instruct",
              "teacher": teacher_name, "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length,
              "lora": lora, "train_layers": train_layers, "continue_training": continue_training,
              "evaluate_on": evaluate_on, "teacher_temperature": teacher_temperature,
              "dedup_threshold": dedup_threshold, "max_new_tokens": getattr(task, "max_new_tokens", None)}
    # Everything is checked before anything is written or loaded: the folder's settings, the teacher, the data.
    from .teacher import check_teacher

    config_path = out_dir / "config.json"
    log = _open_run_log(out_dir, config)
    check_teacher(teacher if isinstance(teacher, Teacher) else teacher_name)

    # Data: seeds from train, the first test_size test records; no test question may ever be trained on.
    train_all = task.load("train")
    test_all = task.load("test")
    for split, rows in (("training", train_all), ("test", test_all)):
        if not rows:
            raise ValueError(f"the {task.name} {split} split is empty: nothing to {'train' if split == 'training' else 'test'} on")
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
                        max_length=max_length, lora=lora, train_layers=train_layers, seed=seed,
                        system=getattr(task, "system", None),
                        inplace=start_model is previous, progress=progress, desc=f"iteration {i}: fine-tuning")

    summary = {"task": task.name, "teacher": teacher_obj.name, "config": config, "iterations": [], "timing": []}
    if zero_shot:
        zs_path = out_dir / "zero_shot_predictions.jsonl"
        if zs_path.exists() and "zero_shot" in log:
            zs = _read_records(zs_path)
        else:
            set_seed(seed)
            base = _served(backend, base_model, tokenizer, out_dir, "base",
                           path=_model_path(student_name) if backend is not None and student is None else None)
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
            predictions = task.predict(predictor, tokenizer, test, batch_size=eval_batch_size, progress=progress)
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
    return _write_summary(out_dir, summary, iterations, hardware())


def _augment(task, teacher, model, tokenizer, current, test_keys, folder, entry, *, per_wrong, evaluate_on,
             temperature, max_new_tokens, dedup_threshold, eval_batch_size, seed, progress):
    """Evaluate on the training data, send seed-origin mistakes to the teacher, verify, save."""
    timing = {}
    started = time.time()
    evaluated = current if evaluate_on == "train" else [r for r in current if r.get("origin") == "seed"]
    predictions = task.predict(model, tokenizer, evaluated, batch_size=eval_batch_size, progress=progress,
                               **({"desc": "evaluating on training data"} if _accepts_desc(task) else {}))
    write_jsonl(folder / "train_predictions.jsonl",
                [dict(p, origin=r.get("origin"), key=task.key(r)) for r, p in zip(evaluated, predictions)])
    timing["train_eval_s"] = round(time.time() - started, 1)
    wrong = [(r, p) for r, p in zip(evaluated, predictions) if not p["correct"]]
    wrong_seeds = [(r, p) for r, p in wrong if r.get("origin") == "seed"]

    started = time.time()
    prompts, parents = [], []
    for record, prediction in wrong_seeds:
        prompt = task.teacher_prompt(record, prediction.get("output"))
        prompts += [prompt] * per_wrong
        parents += [record] * per_wrong
    teacher.log_path = folder / "teacher_log.jsonl"
    system = getattr(task, "teacher_system", None)
    replies = teacher.complete(prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                               system=system, tag=f"iteration {entry['iteration']}") if prompts else []
    timing["teacher_s"] = round(time.time() - started, 1)

    index = NearDuplicateIndex(dedup_threshold)
    known = {task.key(r) for r in current}
    for r in current:
        index.add(_dedup_text(task, r), task.key(r)[:80])
    accepted, rejected = [], []
    for parent, reply in zip(parents, replies):
        ok, bad = task.parse_teacher_reply(reply, parent)
        parent_key = task.key(parent)
        rejected += [dict(b, parent=parent_key) for b in bad]
        for record in ok:
            key = task.key(record)
            text = _dedup_text(task, record)
            reason = None
            if key in test_keys:
                reason = "the generated question is a test question"
            elif key in known:
                reason = "duplicate: the same question is already in the training data"
            elif (dup := index.match(text)) is not None:
                reason = f"near-copy (ROUGE-L {dup[0]:.2f} ≥ {dedup_threshold}) of: {dup[1]}"
            if reason:
                rejected.append({"text": text, "reason": reason, "parent": parent_key})
                continue
            record = dict(record, origin="generated", parent=parent_key, iteration=entry["iteration"])
            accepted.append(record)
            known.add(key)
            index.add(text, key[:80])
    write_jsonl(folder / "rejected.jsonl", rejected)
    write_jsonl(folder / "new_examples.jsonl", accepted)
    entry = dict(entry, wrong=len(wrong), wrong_seed=len(wrong_seeds), evaluated=len(evaluated),
                 train_accuracy=1 - len(wrong) / max(1, len(evaluated)), teacher_requests=len(prompts),
                 new_examples=len(accepted), rejected=len(rejected))
    return entry, timing


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
    from .models import resolve_model_path

    path = resolve_model_path(name)
    return str(Path(path).expanduser().resolve()) if Path(path).expanduser().is_dir() else path


def _accepts_desc(task) -> bool:
    import inspect

    try:
        return "desc" in inspect.signature(task.predict).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _dedup_text(task: Task, record: dict) -> str:
    """What near-duplicate detection compares: the prompt *and* the target, so a problem with the same story
    but new numbers and a new answer is a new example, while a copy with a changed word is not.
    A task may define ``dedup_text(record)`` instead (classification: the text and label, not the long
    instruction that every prompt shares)."""
    custom = getattr(task, "dedup_text", None)
    if callable(custom):
        return custom(record)
    return f"{task.prompt(record)}\n{task.target(record)}"


def _student_dir(out_dir: Path, i: int) -> Path:
    return out_dir / f"student_{i:02d}"


def _load_saved_student(folder: Path, base_model):
    from .models import load_model

    if not folder.exists():
        raise FileNotFoundError(f"{folder} is missing: a continued-training run needs the previous student to resume")
    parameter = next(base_model.parameters())
    model, _ = load_model(str(folder), device=str(parameter.device), dtype=parameter.dtype)
    return model


def _save_model_atomically(model, tokenizer, target: Path) -> None:
    staging = target.parent / f".{target.name}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def _write_summary(out_dir: Path, summary: dict, iterations: int, hardware: str) -> dict:
    entries = summary["iterations"]
    summary = dict(summary)
    summary["complete"] = len(entries) >= iterations + 1
    summary["hardware"] = hardware
    if entries:
        summary["baseline_test_accuracy"] = entries[0]["test_accuracy"]
        summary["final_test_accuracy"] = entries[-1]["test_accuracy"]
        summary["best_test_accuracy"] = max(e["test_accuracy"] for e in entries)
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


#: ``load_run`` key → file of an iteration folder
_RUN_FILES = {"train_records": "train", "test_predictions": "test_predictions",
              "train_predictions": "train_predictions", "new_records": "new_examples",
              "rejected_records": "rejected", "teacher_log": "teacher_log"}


def load_run(out_dir: str | os.PathLike) -> dict:
    """Everything a finished (or partial) run saved: the summary, and per iteration its summary entry plus
    the lists ``train_records``, ``test_predictions``, ``train_predictions``, ``new_records``,
    ``rejected_records`` and ``teacher_log`` read from its folder."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    iterations = []
    for entry in summary["iterations"]:
        folder = _iteration_dir(out_dir, entry["iteration"])
        files = {key: list(read_jsonl(folder / f"{name}.jsonl")) for key, name in _RUN_FILES.items()}
        iterations.append(dict(entry, **files))
    return {"summary": summary, "iterations": iterations}


# ----------------------------------------------------------------------------------------------------
# GSM8K evaluation (used by `gsm8k-eval`)
# ----------------------------------------------------------------------------------------------------
def read_gsm8k_file(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """GSM8K-style records from a JSONL (or JSON list) file: each needs ``question`` and either ``gold`` or an
    ``answer`` with ``#### N``. ``"test"``/``"train"`` load the GSM8K split instead. Bad records raise a
    ``ValueError`` naming the file, the line and the field."""
    if str(path) in ("test", "train"):
        return load_gsm8k(str(path), limit)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (pass a JSONL of GSM8K records, or 'test')")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder (pass a JSONL of GSM8K records, or 'test')")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be ≥ 1 (or None for all records), got {limit}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from err
    if text.lstrip().startswith("["):
        try:
            rows = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from err
    records = []
    for number, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{path}: record {number} is not a JSON object")
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise ValueError(f"{path}: record {number}: missing or empty field 'question'")
        gold = row.get("gold")
        if gold is None:
            answer = row.get("answer")
            if not isinstance(answer, str) or "####" not in answer:
                raise ValueError(f"{path}: record {number}: needs field 'gold' or an 'answer' with '#### N'")
            gold = answer.split("####")[-1]
        value = normalize_number(str(gold))
        if value is None:
            raise ValueError(f"{path}: record {number}: field 'gold' is not a number ({gold!r})")
        records.append({"question": row["question"], "answer": row.get("answer", ""), "gold": value})
        if limit is not None and len(records) >= limit:
            break
    return records


def evaluate_gsm8k(model, tokenizer, records: list[dict], *, max_new_tokens: int = 256, batch_size: int = 8,
                   progress: bool = True) -> dict:
    """``{"accuracy", "correct", "n", "instances": [{"question", "gold", "prediction", "output", "correct"}]}``
    with the same prompt format the LLM2LLM student is trained with (greedy decoding)."""
    task = GSM8KTask(max_new_tokens=max_new_tokens)
    instances = task.predict(model, tokenizer, records, batch_size=batch_size, progress=progress)
    correct = sum(i["correct"] for i in instances)
    return {"accuracy": correct / max(1, len(instances)), "correct": correct, "n": len(instances),
            "instances": instances}


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def add_arguments_llm2llm(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="task name: gsm8k (chapter 07), sst2, trec, snips, casehold (chapter 08)")
    parser.add_argument("--seed-size", type=int, required=True, help="number of seed training examples (1%% of GSM8K train = 74)")
    parser.add_argument("--iterations", type=int, required=True, help="augmentation rounds K (K+1 students; iteration 0 = seed only)")
    parser.add_argument("--test-size", type=int, default=None, help="evaluate on the first M test problems (default: all)")
    parser.add_argument("--teacher", default=None,
                        help="teacher: programmatic-gsm8k (default for gsm8k, offline), embedded, a local model folder, "
                             "a hub id, or openai:MODEL (HELPERS_TEACHER_BASE_URL / HELPERS_TEACHER_API_KEY)")
    parser.add_argument("--out", required=True, help="run folder (created; a rerun resumes it)")
    parser.add_argument("--per-wrong", type=int, default=1, help="teacher replies per wrongly answered seed example")
    parser.add_argument("--student", default=None, help="student model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=8, help="training batch size")
    parser.add_argument("--max-length", type=int, default=512, help="training sequence length (tokens)")
    parser.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tuning")
    parser.add_argument("--train-layers", type=int, default=None, help="train only the last N blocks (CPU speed knob)")
    parser.add_argument("--continue-training", action="store_true", help="continue from the previous student instead of retraining from the base model")
    parser.add_argument("--evaluate-on", choices=("train", "seed"), default="train",
                        help="find mistakes on the whole training data (paper) or on the seeds only (cheaper)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="student generation length (gsm8k default 256)")
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--teacher-temperature", type=float, default=0.7)
    parser.add_argument("--zero-shot", action="store_true", help="also evaluate the untrained student")
    parser.add_argument("--save-model", action="store_true", help="keep the newest student in OUT/student_NN (for gsm8k-eval --model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-progress", action="store_true")
    from .backend import add_backend_arguments

    add_backend_arguments(parser, help="gsm8k: generate the students' predictions through an OpenAI-compatible "
                                       "server that loads models by path (transformers serve started without a "
                                       "model); each student is requested by its saved folder, so MODEL is only a "
                                       "label (e.g. openai:students)")


def main_llm2llm(args: argparse.Namespace) -> int:
    from .backend import backend_from_args, parse_backend
    from .cli import above, at_least, check_model_name, check_output_folder

    # every argument is checked before any model loads and before anything is written (run_llm2llm checks the
    # run folder's settings, the teacher, the data and the seed size the same way)
    at_least(args, 1, "seed_size", "test_size", "per_wrong", "batch_size", "max_length", "max_new_tokens",
             "eval_batch_size", "train_layers")
    at_least(args, 0, "iterations", "lr", "teacher_temperature")
    above(args, 0, "epochs")
    check_output_folder(args.out)
    check_model_name(args.student, "--student")
    task = get_task(args.dataset)
    if parse_backend(args.backend) is not None:
        check_backend_task(task, args.lora)
    backend = backend_from_args(args)  # flags checked and the server reached before anything trains
    if args.max_new_tokens is not None:
        if not hasattr(task, "max_new_tokens"):
            raise SystemExit(f"--max-new-tokens does not apply to {args.dataset}")
        task.max_new_tokens = args.max_new_tokens
    summary = run_llm2llm(
        task, args.teacher, seed_size=args.seed_size, iterations=args.iterations, out_dir=args.out,
        per_wrong=args.per_wrong, test_size=args.test_size, student_name=args.student, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, max_length=args.max_length, lora=args.lora, train_layers=args.train_layers,
        continue_training=args.continue_training, evaluate_on=args.evaluate_on,
        teacher_temperature=args.teacher_temperature, eval_batch_size=args.eval_batch_size, seed=args.seed,
        device=args.device, zero_shot=args.zero_shot, save_model=args.save_model, progress=not args.no_progress,
        backend=backend)
    print(format_summary(summary))
    print(f"written: {Path(args.out) / 'summary.json'}")
    return 0


def format_summary(summary: dict) -> str:
    """A small text table of a run's iterations."""
    lines = [f"{summary['task']} · teacher {summary['teacher']} · student {summary['config']['student']}",
             "iteration  train_size  wrong  new_examples  test_accuracy"]
    for e in summary["iterations"]:
        lines.append(f"{e['iteration']:>9}  {e['train_size']:>10}  {_dash(e['wrong']):>5}  "
                     f"{_dash(e['new_examples']):>12}  {e['test_accuracy']:>13.3f}")
    if "zero_shot_test_accuracy" in summary:
        lines.append(f"zero-shot test accuracy: {summary['zero_shot_test_accuracy']:.3f}")
    return "\n".join(lines)


def _dash(value) -> str:
    return "-" if value is None else str(value)


def add_arguments_gsm8k_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="JSONL of GSM8K records (question + answer/gold), or 'test'")
    parser.add_argument("--model", default=None, help="model name or folder (default: the embedded model)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N problems")
    parser.add_argument("--out", required=True, help="results JSON (accuracy and instances)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-progress", action="store_true")
    from .backend import add_backend_arguments

    add_backend_arguments(parser)


def main_gsm8k_eval(args: argparse.Namespace) -> int:
    from .backend import backend_from_args, parse_backend
    from .cli import at_least, check_model_name, check_output_file, require_records
    from .models import load_model
    from .results import hardware

    at_least(args, 1, "limit", "max_new_tokens", "batch_size")
    check_output_file(args.out)
    check_model_name(args.model)
    if parse_backend(args.backend) is not None and args.model is not None:
        raise ValueError("--model and --backend both name a model: with --backend openai:MODEL the server's MODEL "
                         "is evaluated (leave --model out)")
    backend = backend_from_args(args)  # flags checked and the server reached before anything loads
    records = require_records(read_gsm8k_file(args.data, args.limit), args.data, "GSM8K problems")
    if backend is not None:
        model, tokenizer = backend, None
    else:
        model, tokenizer = load_model(args.model, device=args.device)
    result = evaluate_gsm8k(model, tokenizer, records, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, progress=not args.no_progress)
    payload = {"model": backend.name if backend else args.model or "smollm2-135m-instruct", "data": str(args.data),
               "limit": args.limit, "max_new_tokens": args.max_new_tokens, "hardware": hardware(), **result}
    if backend is not None:
        payload["backend"] = {"base_url": backend.base_url, "concurrency": backend.concurrency}
    atomic_write_json(args.out, payload)
    print(f"accuracy {result['accuracy']:.3f} ({result['correct']}/{result['n']}) → {args.out}")
    return 0
