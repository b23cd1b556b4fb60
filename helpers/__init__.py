"""helpers — reusable code for the course repository reproducing

1. *Detoxifying Large Language Models via Knowledge Editing* (SafeEdit benchmark, DINM), and
2. *LLM2LLM: Boosting LLMs with Novel Iterative Data Enhancement*.

One module per paper concept; notebooks in ``notebooks/`` call into these modules.
"""
from __future__ import annotations

from .config import cache_dir, data_dir, get_scale, results_dir, set_seed

__version__ = "0.1.0"

__all__ = ["__version__", "cache_dir", "data_dir", "get_scale", "results_dir", "set_seed"]
