"""The paper's SafeEdit tables, row for row, with the paper's numbers beside ours (chapters 02, 04, 06).

The paper's values live in one package file, ``helpers/resources/paper_numbers.json`` (with their source):
Table 1 compares Vanilla, FT-L, MEND, Ext-Sub and DINM (DS, DG_avg, fluency, KQA, Csum) on LLaMA2-7B-Chat
and Mistral-7B-v0.1; Table 4 compares SFT, DPO, Self-Reminder and DINM (DG_onlyQ, DG_otherAQ, fluency, KQA,
Csum) on LLaMA2-7B-Chat; RLHF, which the paper names as a baseline without a row, is listed with Table 4.
"""
from __future__ import annotations

import json
from functools import lru_cache

from ..common.config import resource_path

#: Judges whose DS/DG_avg differ by more than this many points are called out under a table.
DISAGREEMENT_POINTS = 15.0


@lru_cache(maxsize=1)
def paper_numbers() -> dict:
    """The paper's Table 1 and Table 4 values (``{"source", "table1", "table4"}``; ``None`` = not reported)."""
    return json.loads(resource_path("paper_numbers.json").read_text(encoding="utf-8"))


def _fmt(value, column: str) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.2f}" if column == "fluency" else f"{value:.1f}"


def _ours(row: dict | None, column: str):
    return None if row is None or "error" in row else row.get("aggregate", {}).get(column)


def paper_table_markdown(table: dict, which: str = "table1", paper_model: str = "LLaMA2-7B-Chat") -> str:
    """One of the paper's tables in its row order: for each column our value, then the paper's for
    ``paper_model``. A method we did not run shows "–" in our cells."""
    spec = paper_numbers()[which]
    columns, paper = spec["columns"], spec["models"][paper_model]
    head = ["method"] + [x for c in columns for x in (f"{c}", f"{c} (paper)")]
    lines = [f"**{spec['title']}** — ours vs. the paper's {paper_model}",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in spec["rows"]:
        row = table["rows"].get(method)
        values = paper.get(method, [None] * len(columns))
        cells = [method]
        for column, theirs in zip(columns, values):
            cells += [_fmt(_ours(row, column), column), _fmt(theirs, column)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def judge_disagreements(table: dict, points: float = DISAGREEMENT_POINTS) -> list[str]:
    """Sentences for every method whose DS or DG_avg differs by more than ``points`` between the judges."""
    out = []
    for name, row in table["rows"].items():
        by = row.get("by_judge", {})
        if len(by) < 2:
            continue
        (a, sa), (b, sb) = list(by.items())[:2]
        for metric in ("DS", "DG_avg"):
            if metric in sa and metric in sb and abs(sa[metric] - sb[metric]) > points:
                out.append(f"{name}: the judges disagree on {metric} by more than {points:.0f} points "
                           f"({a} {sa[metric]:.1f}, {b} {sb[metric]:.1f}).")
    return out


def paper_tables_markdown(table: dict) -> str:
    """Table 1 and Table 4 in the paper's row order with the paper's LLaMA2-7B-Chat numbers, and the source."""
    source = paper_numbers()["source"]
    return (paper_table_markdown(table, "table1") + "\n" + paper_table_markdown(table, "table4")
            + f"\nPaper numbers: {source} Ours: the embedded 135M model, so only the direction of each "
              "difference is comparable.\n")
