"""The SafeEdit benchmark (*Detoxifying LLMs via Knowledge Editing*): records, the build, judges and metrics,
and the harness every detoxification method plugs into. Imports nothing from :mod:`helpers.llm2llm`."""
from __future__ import annotations

from .attacks import family_counts, load_attack_templates
from .build import SafeEditBuild, build_safeedit
from .card import count_table, plot_counts
from .categories import CATEGORIES, category_names
from .data import SAFEEDIT_CATEGORIES, load_safeedit, validate_safeedit
from .general_data import load_triviaqa
from .harness import VanillaMethod, evaluate_safeedit
from .judge import JUDGES, JudgeNotAvailableError, KeywordJudge, compare_judges, get_judge
from .judge_data import judge_training_rows, labelled_responses, normalize_text, record_texts
from .metrics import (
    METRIC_KEYS,
    aggregate_safety,
    evaluate_csum,
    evaluate_kqa,
    general_performance,
    kqa_match,
    ngram_entropy,
    normalize_answer,
    rouge1,
    safe_share,
)
from .paper_tables import paper_numbers, paper_tables_markdown
from .questions import deduplicate, parse_questions, question_problem
from .review import Reviewer, is_refusal, propose, review
from .splits import allocate

__all__ = [
    "CATEGORIES", "JUDGES", "JudgeNotAvailableError", "KeywordJudge", "METRIC_KEYS", "Reviewer",
    "SAFEEDIT_CATEGORIES", "SafeEditBuild", "VanillaMethod", "aggregate_safety", "allocate", "build_safeedit", "category_names",
    "compare_judges", "count_table", "deduplicate", "evaluate_csum", "evaluate_kqa", "evaluate_safeedit",
    "family_counts", "general_performance", "get_judge", "is_refusal", "judge_training_rows", "kqa_match",
    "labelled_responses", "load_attack_templates", "load_safeedit", "load_triviaqa", "ngram_entropy",
    "normalize_answer", "normalize_text", "paper_numbers", "paper_tables_markdown", "parse_questions",
    "plot_counts", "propose", "question_problem", "record_texts", "review", "rouge1", "safe_share",
    "validate_safeedit",
]
