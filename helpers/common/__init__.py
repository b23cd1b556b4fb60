"""What both papers share: settings and folders, files and resume logs, models, generation, the fine-tuner,
teachers, generation servers and results."""
from __future__ import annotations

from .config import results_dir, set_seed
from .datasets import DataNotAvailableError
from .generation import chat_prompt, generate, hidden, show, truncate
from .info import collect
from .io import atomic_write_json, read_jsonl
from .models import load_model, parameter_checksum
from .results import hardware, load_precomputed, record_chapter
from .teacher import get_teacher
from .training import IGNORE_INDEX, encode_example, finetune

__all__ = [
    "DataNotAvailableError", "IGNORE_INDEX", "atomic_write_json", "chat_prompt", "collect", "encode_example",
    "finetune", "generate", "get_teacher", "hardware", "hidden", "load_model", "load_precomputed", "parameter_checksum",
    "read_jsonl", "record_chapter", "results_dir", "set_seed", "show", "truncate",
]
