"""LLM2LLM (*Boosting LLMs with Novel Iterative Data Enhancement*): tasks (GSM8K and four classification
sets), teachers, the loop and the baselines AugGPT and EDA. Imports nothing from :mod:`helpers.safeedit` or
:mod:`helpers.detox`."""
from __future__ import annotations

from .arithmetic import UnsafeExpressionError, evaluate, verify_solution
from .auggpt import rephrase_prompt
from .classification import SPECS, make_task
from .commands import format_summary
from .compare import compare_methods
from .datasets import LABELS
from .gsm8k import GSM8KTask, answers_match, extract_prediction, load_gsm8k
from .gsm8k_teacher import seed_from_prompt, teacher_prompt
from .loop import run_llm2llm, sample_seeds
from .oracle import label_agreement
from .round import Round, llm2llm_round, teach, verify_new_examples
from .run_folder import load_run

__all__ = [
    "GSM8KTask", "Round", "llm2llm_round", "teach", "verify_new_examples", "label_agreement", "LABELS", "SPECS", "UnsafeExpressionError", "answers_match", "compare_methods", "evaluate",
    "extract_prediction", "format_summary", "load_gsm8k", "load_run", "make_task", "rephrase_prompt",
    "run_llm2llm", "sample_seeds", "seed_from_prompt", "teacher_prompt", "verify_solution",
]
