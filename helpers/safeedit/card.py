"""The dataset card of a built SafeEdit set: counts per category and split, their plot, and ``README.md``."""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..common.io import follow_umask
from .attacks import ATTACK_FAMILIES
from .categories import category_names
from .splits import SPLITS

# ----------------------------------------------------------------------------------------------------
# Dataset card
# ----------------------------------------------------------------------------------------------------

@dataclass
class BuildResult:
    out: Path
    splits: dict = field(default_factory=dict)          # split → list of records
    candidates: list = field(default_factory=list)      # every reviewed candidate (before review)
    review: dict = field(default_factory=dict)          # apply_review's report
    questions: dict = field(default_factory=dict)       # category → [{"text", "source"}]
    question_splits: list = field(default_factory=list)  # [{"category", "question", "split"}] before review
    rejected_questions: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)           # chunks generated / reused, fallbacks, seconds
    files: dict = field(default_factory=dict)


def count_table(splits: dict) -> dict:
    """Counts per category and per attack family (a record counts once per family), for each split."""
    by_category = {name: {split: sum(r["unsafety category"] == name for r in records) for split, records in splits.items()}
                   for name in category_names()}
    by_family = {fam: {split: sum(fam in r["attack category"].split(", ") for r in records)
                       for split, records in splits.items()} for fam in ATTACK_FAMILIES}
    return {"category": by_category, "family": by_family}


def counts_frame(splits: dict):
    """A long pandas frame (``kind``, ``name``, ``split``, ``records``) for plotting."""
    import pandas as pd

    rows = [{"kind": kind, "name": name, "split": split, "records": n}
            for kind, table in count_table(splits).items() for name, per in table.items() for split, n in per.items()]
    return pd.DataFrame(rows)


def plot_counts(splits: dict, path: str | Path | None = None):
    """Seaborn bar charts of records per category and per attack family, split by split.

    Returns the figure; with ``path`` it is also saved (atomically, without a timestamp) and the path returned.
    """
    import seaborn as sns
    from matplotlib.figure import Figure

    frame = counts_frame(splits)
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, kind, title in zip(axes, ("category", "family"), ("records per unsafety category", "records per attack family")):
        sns.barplot(data=frame[frame.kind == kind], y="name", x="records", hue="split", ax=ax, orient="h",
                    hue_order=list(SPLITS), palette="viridis")
        ax.set_title(title)
        ax.set_ylabel("")
    axes[0].get_legend().remove()
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1.0), title="split", frameon=False)
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    follow_umask(fd)  # like every other file written: the mode follows the umask
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def dataset_card(result: BuildResult, meta: dict, plot_file: str | None = "counts.png") -> str:
    """The markdown dataset card: what was built, how, and the counts."""
    s = meta["settings"]
    splits = result.splits
    table = count_table(splits)
    prov = [p for records in meta["records"].values() for p in records]
    q_sources = Counter(q["source"] for qs in result.questions.values() for q in qs)
    safe_sources = Counter(p["safe source"] for p in prov)
    total = sum(len(v) for v in splits.values())
    lines = [
        "# SafeEdit-style benchmark (built in chapter 01)",
        "",
        "> **Content note.** The records pair jailbreak-style prompts with harmful questions and a model's "
        "unsafe reply. The questions are mild and generic; nothing here contains real harmful instructions.",
        "",
        f"{total} records in the official SafeEdit JSON schema: "
        + ", ".join(f"`{split}.json` {len(splits[split])}" for split in SPLITS)
        + ". Load them with `helpers.safeedit.data.load_safeedit(\"built\", split=\"test\")` (this folder) or "
          "`load_safeedit(\"path/to/test.json\")`. Validation and test records carry the four `generalization test` "
          "inputs; train records do not, as in the official data.",
        "",
        "## How it was built",
        "",
        f"`python -m helpers safeedit-build --out DIR --per-category {s['per_category']} --attacks {s['attacks']} "
        f"--teacher {s['teacher']} --seed {s['seed']} --constrain {s['constrain']}` "
        f"(questions: {s['question_tokens']} new tokens, {s['question_rounds']} round(s); responses: "
        f"{s['response_tokens']} new tokens, greedy).",
        "",
        f"* Teacher: `{s['teacher']}`. Questions per category: {s['per_category']} "
        f"({q_sources.get('teacher', 0)} written by the teacher, {q_sources.get('curated', 0)} from the team's curated "
        f"mild list; {len(result.rejected_questions)} teacher lines rejected by the parser or as duplicates).",
        f"* Attacks: {s['attacks']} of the team's 48 templates per question (families: {', '.join(ATTACK_FAMILIES)}).",
        f"* Safe generations: {safe_sources.get('teacher', 0)} are the teacher's own refusals, "
        f"{safe_sources.get('template', 0)} are team-written refusals that replaced a round-1 reply which was no refusal "
        "(`provenance.json` keeps the teacher's reply).",
        f"* Review: {result.review.get('accept', 0)} accepted, {result.review.get('edit', 0)} edited, "
        f"{result.review.get('reject', 0)} rejected ({result.review.get('human', 0)} human decisions, "
        f"{result.review.get('pre-screen', 0)} by the refusal-keyword pre-screen).",
        f"* Splits: by question, stratified by category, seeded, ratio {':'.join(map(str, s['split_ratios']))} "
        "(train:validation:test, as the official 4,050/2,700/1,350); no question appears in two splits.",
        f"* Knowledge constrain (D_cons): `{meta['knowledge constrain source']}` instruction/answer pairs.",
        "",
        "## Records per unsafety category",
        "",
        "| category | " + " | ".join(SPLITS) + " |",
        "|---|" + "---:|" * len(SPLITS),
    ]
    lines += [f"| {name} | " + " | ".join(str(per[split]) for split in SPLITS) + " |" for name, per in table["category"].items()]
    lines += ["", "## Records per attack family (a record counts once for each of its families)", "",
              "| attack family | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
    lines += [f"| {name} | " + " | ".join(str(per[split]) for split in SPLITS) + " |" for name, per in table["family"].items()]
    if plot_file:
        lines += ["", f"![records per category and attack family]({plot_file})"]
    from ..common.models import EMBEDDED_NAME

    weak = (" The embedded 135M-parameter teacher writes weak questions and incoherent \"unsafe\" replies, so this "
            "set exercises the pipeline and the later chapters; it does not measure real-world safety."
            if s["teacher"] == EMBEDDED_NAME else "")
    lines += ["", "## Licence and limits", "",
              "Questions, attack templates, refusals and D_cons pairs were written by the course team; generations "
              f"come from `{s['teacher']}`.{weak} For a faithful benchmark use the official `zjunlp/SafeEdit` "
              "(CC BY-NC-SA 4.0) or build with a strong teacher.", ""]
    return "\n".join(lines)
