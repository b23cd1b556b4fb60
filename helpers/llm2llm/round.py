"""One LLM2LLM round after a student is trained: its mistakes on seed examples become new training data.

The paper's loop (Lee et al., 2024, Algorithm 1) is, per iteration ``i``::

    M_i = finetune(base model, D)                       # helpers.common.training.finetune
    W_i = {x in D_0 : M_i(x) is wrong}                  # only *seed* examples: generated ones never seed more
    A_i = teacher(W_i)                                  # per_wrong new examples per wrong seed
    D   = D + verified(A_i)                             # verify_new_examples

:func:`llm2llm_round` is the last three lines, step by step; :func:`helpers.llm2llm.loop.run_llm2llm` adds the
training, the test evaluation, the files of every iteration and resuming.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Sequence

from ..common.distributed import on_main_only
from ..common.text import NearDuplicateIndex
from .task import Task


@dataclass
class Round:
    """What one round saw and produced (``timing``: seconds per step)."""

    evaluated: list            # the records the student was evaluated on (all training data, or the seeds)
    predictions: list          # its predictions on them, in order
    wrong: list                # (record, prediction) it got wrong
    wrong_seeds: list          # … of which seed-origin: the teacher's input
    prompts: list              # the teacher prompts (per_wrong per wrong seed)
    replies: list              # the teacher's replies, in order
    accepted: list             # verified new examples (origin "generated", parent, iteration)
    rejected: list             # {"text", "reason", "parent"} per rejected example
    timing: dict = field(default_factory=dict)
    outcomes: list = field(default_factory=list)  # per reply: {"accepted": n, "reason": why none was (or None)}

    @property
    def replies_accepted(self) -> int:
        """How many teacher replies gave at least one accepted example."""
        return sum(o["accepted"] > 0 for o in self.outcomes)

    @property
    def acceptance_rate(self) -> float | None:
        """The share of teacher replies that gave at least one accepted example (``None`` without replies)."""
        return round(self.replies_accepted / len(self.outcomes), 4) if self.outcomes else None

    def rejection_reasons(self) -> dict:
        """Rejected *replies* by the kind of their (first) reason: ``{"malformed": 3, "copy of the seed": 2, …}``."""
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if o["accepted"] == 0:
                kind = reason_kind(o["reason"])
                counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def reason_kind(reason: str | None) -> str:
    """A rejection reason without its details: ``"near-copy (ROUGE-L 0.97 ≥ 0.95) of: …"`` → ``"near-copy"``."""
    text = (reason or "no example").split(":")[0]
    return text.split("(")[0].strip() or "no example"


def llm2llm_round(task: Task, teacher, student, tokenizer, data: Sequence[dict], test_keys: set, *, iteration: int,
                  per_wrong: int = 1, evaluate_on: str = "train", temperature: float = 0.7,
                  max_new_tokens: int = 512, dedup_threshold: float = 0.95, batch_size: int = 8, seed: int = 0,
                  progress: bool = False) -> Round:
    """Evaluate ``student`` on its training ``data``, send the wrong seed-origin examples to ``teacher`` and
    verify its replies against ``data`` and the test set (``test_keys``)."""
    timing, started = {}, time.time()
    # 1. the student on its own training data (the paper), or on the seed examples only (cheaper, same teacher input)
    evaluated = list(data) if evaluate_on == "train" else [r for r in data if r.get("origin") == "seed"]
    desc = {"desc": "evaluating on training data"} if "desc" in inspect.signature(task.predict).parameters else {}
    predictions = task.predict(student, tokenizer, evaluated, batch_size=batch_size, progress=progress, **desc)
    timing["train_eval_s"] = round(time.time() - started, 1)
    # 2. its mistakes, restricted to seed-origin examples
    wrong = [(r, p) for r, p in zip(evaluated, predictions) if not p["correct"]]
    wrong_seeds = [(r, p) for r, p in wrong if r.get("origin") == "seed"]
    # 3. the teacher writes per_wrong new examples from each wrong seed (shown the student's wrong answer)
    # 4. only verified, new examples join the data
    started = time.time()
    prompts, replies, accepted, rejected, outcomes = teach(
        task, teacher, wrong_seeds, data, test_keys, iteration=iteration, per_wrong=per_wrong,
        temperature=temperature, max_new_tokens=max_new_tokens, dedup_threshold=dedup_threshold, seed=seed)
    timing["teacher_s"] = round(time.time() - started, 1)
    return Round(evaluated, predictions, wrong, wrong_seeds, prompts, replies, accepted, rejected, timing, outcomes)


def teach(task: Task, teacher, wrong_seeds: Sequence[tuple], data: Sequence[dict], test_keys: set, *, iteration: int,
          per_wrong: int = 1, temperature: float = 0.7, max_new_tokens: int = 512, dedup_threshold: float = 0.95,
          seed: int = 0) -> tuple[list, list, list, list, list]:
    """Steps 3–4 of a round: ``(prompts, replies, accepted, rejected, outcomes)`` for the ``(record, prediction)``
    pairs of ``wrong_seeds``. A language-model teacher (``prompt_style == "few-shot"``) gets few-shot turns built
    from other seeds of ``data`` where the task offers them; replies end at the task's ``teacher_stop`` strings."""
    few_shot = getattr(teacher, "prompt_style", "few-shot") == "few-shot" and hasattr(task, "demonstrations")
    prompts = [task.teacher_prompt(r, p.get("output"), task.demonstrations(r, data)) if few_shot
               else task.teacher_prompt(r, p.get("output")) for r, p in wrong_seeds for _ in range(per_wrong)]
    parents = [r for r, _ in wrong_seeds for _ in range(per_wrong)]
    # under a multi-process launch (sharded_work) the teacher runs on rank 0 alone: one set of requests
    replies = on_main_only(lambda: teacher.complete(
        prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
        system=getattr(task, "teacher_system", None), stop=getattr(task, "teacher_stop", None),
        tag=f"iteration {iteration}")) if prompts else []
    outcomes: list = []
    accepted, rejected = verify_new_examples(task, replies, parents, data, test_keys, iteration=iteration,
                                             dedup_threshold=dedup_threshold, outcomes=outcomes)
    return prompts, replies, accepted, rejected, outcomes


def verify_new_examples(task: Task, replies: Sequence[str], parents: Sequence[dict], data: Sequence[dict],
                        test_keys: set, *, iteration: int, dedup_threshold: float = 0.95,
                        outcomes: list | None = None) -> tuple[list, list]:
    """``(accepted, rejected)``: each reply parsed and checked by the task (GSM8K: the arithmetic recomputed),
    then refused when it is a test question, already in the data, or a near-copy (ROUGE-L ≥ ``dedup_threshold``)
    of the data or of an example accepted before it. Every rejection keeps its reason. ``outcomes``, when
    given, gets one ``{"accepted": n, "reason": …}`` per reply: the teacher's acceptance is counted per reply,
    so a reply that repeats a bad block 100 times is one rejected reply, not 100."""
    index = NearDuplicateIndex(dedup_threshold)
    known = {task.key(r) for r in data}
    for r in data:
        index.add(dedup_text(task, r), task.key(r)[:80])
    accepted, rejected = [], []
    for parent, reply in zip(parents, replies):
        ok, bad = task.parse_teacher_reply(reply, parent)
        parent_key = task.key(parent)
        before = (len(accepted), len(rejected))
        rejected += [dict(b, parent=parent_key) for b in bad]
        for record in ok:
            key, text = task.key(record), dedup_text(task, record)
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
            accepted.append(dict(record, origin="generated", parent=parent_key, iteration=iteration))
            known.add(key)
            index.add(text, key[:80])
        if outcomes is not None:
            n_ok = len(accepted) - before[0]
            first_bad = rejected[before[1]]["reason"] if len(rejected) > before[1] else None
            outcomes.append({"accepted": n_ok, "reason": None if n_ok else first_bad})
    return accepted, rejected


def dedup_text(task: Task, record: dict) -> str:
    """What near-duplicate detection compares: the prompt *and* the target, so a problem with the same story
    but new numbers and a new answer is a new example, while a copy with a changed word is not.
    A task may define ``dedup_text(record)`` instead (classification: the text and label, not the long
    instruction that every prompt shares)."""
    custom = getattr(task, "dedup_text", None)
    if callable(custom):
        return custom(record)
    return f"{task.prompt(record)}\n{task.target(record)}"
