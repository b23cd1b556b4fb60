"""The LLM2LLM run folder: settings, the resume log, each iteration's files, saved students, the summary.

``OUT/config.json`` holds the settings (:data:`RESUME_KEYS`; a rerun with other settings is refused),
``OUT/run_log.jsonl`` one line per finished step (a :class:`helpers.common.io.RunLog`), and every iteration
``iteration_NN/`` its training data, predictions, teacher log, new and rejected examples and metrics.
:func:`load_run` reads a finished or partial run back.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..common.io import atomic_write_json, read_jsonl

# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------
#: Settings that must match when a run is resumed (``iterations`` may grow): the run hash of the folder's
#: :class:`helpers.common.io.RunLog` (``OUT/run_log.jsonl``).
RESUME_KEYS = ("task", "seed_size", "seed", "per_wrong", "test_size", "student", "teacher", "epochs", "lr",
               "batch_size", "lora", "train_layers", "continue_training", "evaluate_on", "max_length",
               "teacher_temperature", "dedup_threshold", "max_new_tokens")
#: Settings added after run folders already existed: compared on resume only when the folder's ``config.json``
#: records them (so folders written before they existed still resume; the run hash stays over RESUME_KEYS).
RESUME_KEYS_RECORDED = ("teacher_max_new_tokens", "grad_accum", "lr_schedule", "warmup_ratio", "dedup_on")
RUN_LOG = "run_log.jsonl"


def _iteration_dir(out_dir: Path, i: int) -> Path:
    return out_dir / f"iteration_{i:02d}"


def _open_run_log(out_dir: Path, config: dict):
    """The run folder's :class:`helpers.common.io.RunLog`, hashed over :data:`RESUME_KEYS`; its records are the
    finished steps (``seeds``, ``zero_shot``, ``iteration_NN``). A folder that holds a run with other settings
    is refused, naming the first setting that differs. A folder written before the log existed (``config.json``
    and ``metrics.json`` files only) is adopted when its settings are the same. Nothing is written here unless
    such a folder is adopted."""
    from ..common.io import RunLog, read_json

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
    for key in RESUME_KEYS_RECORDED:
        if previous is not None and key in previous and previous[key] != config.get(key):
            raise ValueError(f"{config_path}: this run used {key}={previous[key]!r}, now {key}={config.get(key)!r}; "
                             "use another --out folder or the same settings to resume")
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


def _student_dir(out_dir: Path, i: int) -> Path:
    return out_dir / f"student_{i:02d}"


def _load_saved_student(folder: Path, base_model):
    from ..common.models import load_model

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
