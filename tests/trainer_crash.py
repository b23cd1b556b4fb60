"""Crash a transformers ``Trainer`` mid-run and count what a rerun trains (the checkpoint-resume tests)."""
from __future__ import annotations


def crash_trainer_at(monkeypatch, update: int) -> None:
    """From now on the ``Trainer``'s ``update``-th training step raises ``KeyboardInterrupt`` (a killed run)."""
    from transformers import Trainer

    calls, step = [], Trainer.training_step

    def crashing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == update:
            raise KeyboardInterrupt("killed")
        return step(self, *args, **kwargs)

    crashing.original = step
    monkeypatch.setattr(Trainer, "training_step", crashing)


def count_trainer_steps(monkeypatch) -> list:
    """Undo :func:`crash_trainer_at`; the returned list grows by one per training step from now on."""
    from transformers import Trainer

    steps, step = [], getattr(Trainer.training_step, "original", Trainer.training_step)
    monkeypatch.setattr(Trainer, "training_step", lambda self, *a, **k: steps.append(1) or step(self, *a, **k))
    return steps
