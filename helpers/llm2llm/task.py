"""The task interface the LLM2LLM loop (chapters 07–08) runs on.

A :class:`Task` knows how to turn a record into a student prompt and a training target, how to score the
student, how to ask a teacher for new examples from a *seed* example the student got wrong, and how to
parse and validate what the teacher wrote. GSM8K (chapter 07) and the classification data sets
(chapter 08: SST-2, TREC, SNIPS, CaseHOLD) implement it; the loop in :mod:`helpers.llm2llm.loop` only talks
to this interface.

Records are dicts. Every record the loop handles carries ``"origin"``: ``"seed"`` for the original seed
data and ``"generated"`` for teacher-written examples (only seed-origin examples ever reach the teacher).
"""
from __future__ import annotations

import importlib
from typing import Sequence


class Task:
    """Base class; subclasses fill in the methods below."""

    #: short name used by the CLI (``--dataset NAME``)
    name: str = "task"

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        """Records of ``split`` (``"train"`` or ``"test"``)."""
        raise NotImplementedError

    def prompt(self, record: dict) -> str:
        """The user message the student sees, at training *and* at evaluation (one format for both)."""
        raise NotImplementedError

    def target(self, record: dict) -> str:
        """The assistant reply the student is trained on (the loss covers only this part)."""
        raise NotImplementedError

    def predict(self, model, tokenizer, records: Sequence[dict], *, batch_size: int = 8,
                progress: bool = True) -> list[dict]:
        """Run the student on ``records``; one dict per record with at least
        ``{"prediction", "output", "correct"}`` (``correct`` is a bool)."""
        raise NotImplementedError

    def teacher_prompt(self, record: dict, student_output: str | None = None) -> str:
        """A prompt asking the teacher for new examples like the (wrongly answered) seed ``record``."""
        raise NotImplementedError

    def parse_teacher_reply(self, reply: str, seed: dict) -> tuple[list[dict], list[dict]]:
        """Parse and validate a teacher reply into ``(accepted, rejected)``.

        ``accepted`` are new records (same fields as :meth:`load` gives, ``origin="generated"``,
        ``parent`` = the seed's key); ``rejected`` are ``{"text", "reason"}`` dicts explaining each rejection.
        """
        raise NotImplementedError

    def key(self, record: dict) -> str:
        """A stable identity for deduplication and for keeping test items out of training data."""
        return " ".join(self.prompt(record).lower().split())


#: ``--dataset`` name → "module:factory" returning a :class:`Task`.
TASKS: dict[str, str] = {
    "gsm8k": "helpers.llm2llm.gsm8k:GSM8KTask",
    "sst2": "helpers.llm2llm.classification:make_task",
    "trec": "helpers.llm2llm.classification:make_task",
    "snips": "helpers.llm2llm.classification:make_task",
    "casehold": "helpers.llm2llm.classification:make_task",
}


def check_seed_size(task_name: str, seed_size: int, available: int) -> None:
    """``ValueError`` when more seeds are asked than the training split can give (never silently fewer)."""
    if seed_size > available:
        raise ValueError(f"seed size {seed_size} (--seed-size) is more than the {available} records of the "
                         f"{task_name} training split that can be seeds")


def get_task(name: str, **options) -> Task:
    """The task registered under ``name`` (see :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(TASKS)}")
    module_name, attr = TASKS[name].split(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(name, **options) if attr == "make_task" else factory(**options)
