"""helpers — reusable code for the course repository reproducing

1. *Detoxifying Large Language Models via Knowledge Editing* (SafeEdit benchmark, DINM), and
2. *LLM2LLM: Boosting LLMs with Novel Iterative Data Enhancement*.

One subpackage per paper, one module per paper concept (notebooks import from the subpackages)::

    helpers.common    settings, files and resume logs, models, generation, the fine-tuner, teachers, servers
    helpers.safeedit  the SafeEdit benchmark: records, build, judges, metrics, the evaluation harness
    helpers.detox     DINM and the baselines it is compared with (FT-L, MEND, Ext-Sub, SFT, DPO, RLHF,
                      Self-Reminder), the sweep and the main table
    helpers.llm2llm   LLM2LLM: tasks (GSM8K, SST-2, TREC, SNIPS, CaseHOLD), the loop, AugGPT, EDA

``helpers.llm2llm`` and ``helpers.safeedit``/``helpers.detox`` never import each other; all use ``common``.
The command line is ``python -m helpers COMMAND`` (:mod:`helpers.cli`).
"""
from __future__ import annotations

from .common.config import cache_dir, data_dir, get_scale, results_dir, set_seed

__version__ = "0.1.0"

__all__ = ["__version__", "cache_dir", "data_dir", "get_scale", "results_dir", "set_seed"]
