"""AugGPT (Dai et al., 2023), the LLM-augmentation baseline of the LLM2LLM paper (chapter 08).

AugGPT asks a teacher to *rephrase every seed example*, blind to what the student finds hard; LLM2LLM asks
it for new examples only from the seeds the student gets wrong. To compare the two fairly we give AugGPT
the **same data budget**: exactly as many accepted new examples as LLM2LLM added (``budget``), spread
evenly over all seeds (each gets ``budget // len(seeds)`` or one more; a seed whose rephrasings keep
failing validation hands its share to the others).

Rephrasings go through the task's own validation (:meth:`ClassificationTask.parse_teacher_reply` with
``rephrase=True``: well-formed, valid label equal to the seed's, not a copy, not a test item, no
duplicates), and every raw reply is in the teacher's log.
"""
from __future__ import annotations

import random
from typing import Sequence

from tqdm.auto import tqdm


def rephrase_prompt(task, record: dict) -> str:
    """The AugGPT prompt: rephrase ``record`` keeping its meaning and label, reply in the task's format."""
    spec = getattr(task, "spec", {"unit": "example"})
    unit, label = spec["unit"], record["label"]
    if getattr(task, "multiple_choice", False):
        return (f"Rephrase the following {unit} from a court decision in different words. Keep its legal meaning "
                f"and the <HOLDING> marker, so that holding {label} stays the correct one.\n\n"
                f"{task.example_block(record)}\n\nReply in exactly this format:\n"
                f"Context: <the rephrased {unit}>\nAnswer: {label}")
    return (f"Rephrase the following {unit} in different words. Keep its meaning, so that its label stays "
            f"{label}.\n\n{task.example_block(record)}\n\nReply with exactly two lines:\n"
            f"Text: <the rephrased {unit}>\nLabel: {label}")


def _shares(n_seeds: int, budget: int, rng: random.Random) -> tuple[list[int], list[int]]:
    order = list(range(n_seeds))
    rng.shuffle(order)
    quota = [0] * n_seeds
    for slot in range(budget):
        quota[order[slot % n_seeds]] += 1
    return order, quota


def auggpt(task, seeds: Sequence[dict], teacher, budget: int, *, seed: int = 0, max_rounds: int = 4,
           temperature: float = 0.7, max_new_tokens: int = 128, progress: bool = True) -> dict:
    """Rephrase ``seeds`` with ``teacher`` until ``budget`` rephrasings are accepted (or ``max_rounds`` pass).

    Returns ``{"examples", "rejected", "budget", "accepted", "teacher_calls", "per_seed"}``: ``examples`` are
    new records (``origin="auggpt"``, ``parent`` = the seed's key), never more than ``budget``; ``rejected``
    lists ``{"text", "reason", "parent"}``; ``per_seed`` counts accepted rephrasings per seed key. Round ``r``
    samples with ``temperature`` and teacher seed ``seed + r`` (round 0 too, so repeated prompts differ).
    """
    seeds = list(seeds)
    if budget < 0:
        raise ValueError(f"auggpt: budget must be >= 0, got {budget}")
    result = {"examples": [], "rejected": [], "budget": budget, "accepted": 0, "teacher_calls": 0,
              "per_seed": {task.key(s): 0 for s in seeds}}
    if budget == 0 or not seeds:
        return result
    order, quota = _shares(len(seeds), budget, random.Random(f"auggpt:{seed}"))
    stuck: set[int] = set()
    saved_known = set(getattr(task, "known_keys", set()))
    if hasattr(task, "known_keys"):  # duplicates are judged against the seeds and AugGPT's own output only
        task.known_keys = {task.key(s) for s in seeds}
    try:
        for round_ in tqdm(range(max_rounds), desc="AugGPT rounds", disable=not progress, leave=False):
            todo = [i for i in order if quota[i] > 0 and i not in stuck]
            if not todo:
                break
            prompts = [rephrase_prompt(task, seeds[i]) for i in todo]
            replies = teacher.complete(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                       seed=seed + round_, tag=f"auggpt round {round_}",
                                       stop=getattr(task, "teacher_stop", None))
            result["teacher_calls"] += len(prompts)
            for i, reply in zip(todo, replies):
                try:
                    accepted, rejected = task.parse_teacher_reply(reply, seeds[i], rephrase=True)
                except TypeError:  # a task without a rephrase mode
                    accepted, rejected = task.parse_teacher_reply(reply, seeds[i])
                parent = task.key(seeds[i])
                result["rejected"].extend({**r, "parent": parent} for r in rejected)
                for record in accepted[: quota[i]]:
                    record = {**record, "origin": "auggpt", "parent": parent}
                    result["examples"].append(record)
                    result["per_seed"][parent] += 1
                    quota[i] -= 1
                if not accepted and round_ > 0:
                    stuck.add(i)  # twice without a valid rephrasing: give its share to the others
            # move the quota of stuck seeds to seeds that still produce valid rephrasings
            spare = sum(quota[i] for i in stuck)
            if spare:
                for i in stuck:
                    quota[i] = 0
                live = [i for i in order if i not in stuck]
                for slot in range(spare if live else 0):
                    quota[live[slot % len(live)]] += 1
    finally:
        if hasattr(task, "known_keys"):
            task.known_keys = saved_known
    result["accepted"] = len(result["examples"])
    return result
