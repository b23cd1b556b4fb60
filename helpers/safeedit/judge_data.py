"""What the learned judge is trained on, and the proof that it never grades its own training texts.

:func:`judge_training_rows` — the course's mild authored responses and the built SafeEdit **train** split,
never an official record, never a built validation/test text; :func:`check_judge_overlap` refuses an
evaluation whose records share a text with the judge's training rows; :func:`judge_quality` and
:func:`judge_info` report held-out accuracy and where the judge came from.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Sequence

from ..common.config import resource_path
from .judge import Judge, KeywordJudge, judge_report

# ----------------------------------------------------------------------------------------------------
# Labelled responses (training and held-out data for the learned judges)
# ----------------------------------------------------------------------------------------------------
#: The course's own mild labelled responses (label 0 safe, 1 unsafe).
AUTHORED_RESPONSES = resource_path("judge_responses.json")
#: Where the labelled data comes from; see :func:`labelled_responses`.
LABELLED_SOURCES = ("safeedit", "built", "authored")
#: What the default probe trains on: package data only, so it is the same judge on every machine.
JUDGE_TRAIN_SOURCES = ("authored", "built")
#: Human-readable names of the default probe's training data (for ``judge_info``).
JUDGE_TRAIN_DESCRIPTION = ("authored responses (train split of helpers/resources/judge_responses.json)",
                           "built SafeEdit train split (safe/unsafe generations; texts that also occur in the "
                           "built validation/test splits are left out)")


def normalize_text(text: str) -> str:
    """Whitespace-folded text: how training texts and evaluated texts are compared for overlap."""
    return " ".join(str(text).split())


def record_texts(record: dict) -> list[str]:
    """Every text of a SafeEdit record a judge could have seen: the safe and unsafe generations and the
    evaluation inputs (adversarial prompt, question, the four generalisation inputs)."""
    texts = [record.get("safe generation"), record.get("unsafe generation"), record.get("adversarial prompt"),
             record.get("question")]
    gen = record.get("generalization test")
    if isinstance(gen, dict):
        texts += [v for k, v in gen.items() if k.startswith("test input")]
    return [normalize_text(t) for t in texts if isinstance(t, str) and t.strip()]


def _split_of(group: str, test_share: float) -> str:
    bucket = int(hashlib.sha256(group.encode("utf-8")).hexdigest()[:8], 16) % 10_000
    return "test" if bucket < test_share * 10_000 else "train"


def _evaluated_built_texts(built_dir: str | Path | None = None) -> set[str]:
    """Texts of the built validation and test records (what chapters, CLIs and tests evaluate)."""
    from .data import BUILT_SAFEEDIT, read_safeedit

    folder = Path(built_dir) if built_dir is not None else BUILT_SAFEEDIT
    texts: set[str] = set()
    for split in ("validation", "test"):
        path = folder / f"{split}.json"
        if path.exists():
            for record in read_safeedit(path):
                texts.update(record_texts(record))
    return texts


def labelled_responses(sources: Sequence[str] = LABELLED_SOURCES, *, test_share: float = 0.25,
                       built_dir: str | Path | None = None, authored_path: str | Path | None = None) -> list[dict]:
    """Labelled responses ``{"text", "label", "source", "group", "split"}`` (label 0 safe, 1 unsafe).

    * ``"authored"``: ``helpers/resources/judge_responses.json``; about ``test_share`` of them are held out
      (``"test"``), chosen by a hash of the text;
    * ``"built"``: the ``safe generation`` (0) and ``unsafe generation`` (1) of the built SafeEdit set
      (package data, chapter 01). Only the **train** split's texts can be ``"train"``, and only when the same
      text does not also occur in a validation or test record (the built set reuses category refusals);
      validation and test texts are always ``"test"``;
    * ``"safeedit"``: the same two fields of the data folder's official sample and three-instances files
      (skipped when the data folder is not set); always ``"test"`` — the default judge never trains on
      official records.

    So the ``"train"`` rows (what :class:`ProbeJudge` trains on by default) never contain a text of any record
    that a chapter, CLI or test evaluates, and depend on package data only. Exact duplicate texts are kept
    once (the first source in the order safeedit, built, authored wins, so an evaluated text stays "test").
    """
    from ..common.datasets import DataNotAvailableError
    from .data import BUILT_SAFEEDIT, load_safeedit, read_safeedit

    unknown = set(sources) - set(LABELLED_SOURCES)
    if unknown:
        raise ValueError(f"unknown labelled-response sources {sorted(unknown)}; choose from {LABELLED_SOURCES}")
    rows: list[dict] = []

    def add_records(records: list[dict], source: str, trainable: bool, evaluated: set[str]) -> None:
        for record in records:
            group = "q:" + " ".join(record["question"].lower().split())
            for field, label in (("safe generation", 0), ("unsafe generation", 1)):
                text = record[field]
                split = "train" if trainable and normalize_text(text) not in evaluated else "test"
                rows.append({"text": text, "label": label, "source": source, "group": group, "split": split})

    if "safeedit" in sources:
        for which in ("sample", "three"):
            try:
                add_records(load_safeedit(which), "safeedit", False, set())
            except DataNotAvailableError:
                pass
    if "built" in sources:
        folder = Path(built_dir) if built_dir is not None else BUILT_SAFEEDIT
        evaluated = _evaluated_built_texts(folder)
        for split in ("validation", "test", "train"):
            path = folder / f"{split}.json"
            if not path.exists():
                continue
            try:
                add_records(read_safeedit(path), "built", split == "train", evaluated)
            except (ValueError, OSError) as err:
                warnings.warn(f"labelled_responses: skipping {path}: {err}", stacklevel=2)
    if "authored" in sources:
        path = Path(authored_path) if authored_path is not None else AUTHORED_RESPONSES
        doc = json.loads(path.read_text(encoding="utf-8"))
        for index, item in enumerate(doc["responses"] if isinstance(doc, dict) else doc):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str) or item.get("label") not in (0, 1):
                raise ValueError(f"{path}: response #{index} needs a string 'text' and a 'label' of 0 or 1")
            group = "t:" + item["text"]
            rows.append({"text": item["text"], "label": item["label"], "source": "authored",
                         "group": group, "split": _split_of(group, test_share)})

    seen: set[str] = set()
    out = []
    for row in rows:
        text = row["text"].strip()
        if not text or normalize_text(text) in seen:
            continue
        seen.add(normalize_text(text))
        row["text"] = text
        out.append(row)
    return out


def judge_training_rows() -> list[dict]:
    """What the default :class:`ProbeJudge` trains on: the ``"train"`` rows of the package's labelled data."""
    return [r for r in labelled_responses(JUDGE_TRAIN_SOURCES) if r["split"] == "train"]


def judge_heldout_rows() -> list[dict]:
    """The package's held-out labelled responses (authored test split, built validation/test generations):
    where judge quality is reported, the same on every machine."""
    return [r for r in labelled_responses(JUDGE_TRAIN_SOURCES) if r["split"] == "test"]


def training_sha256(texts: Sequence[str], labels: Sequence[int]) -> str:
    """A digest of a judge's training data (sorted text/label pairs)."""
    pairs = sorted(zip((normalize_text(t) for t in texts), (int(l) for l in labels)))
    return hashlib.sha256(json.dumps(pairs).encode("utf-8")).hexdigest()


def judge_overlap(judge: "Judge", records: Sequence[dict]) -> list:
    """Ids of the records that share a text (a generation or an evaluation input) with ``judge``'s training
    data; ``[]`` for a judge without training texts."""
    train = getattr(judge, "training_texts", None)
    if not train:
        return []
    return [r.get("id") for r in records if any(t in train for t in record_texts(r))]


class JudgeOverlapError(ValueError):
    """The judge was trained on texts of the records it would grade."""


def check_judge_overlap(judge: "Judge", records: Sequence[dict], *, allow: bool = False,
                        source: str = "<records>") -> int:
    """The number of evaluated records that overlap the judge's training data; raises
    :class:`JudgeOverlapError` (naming the records) when it is above 0 and ``allow`` is false."""
    ids = judge_overlap(judge, records)
    if ids and not allow:
        shown = ", ".join(str(i) for i in ids[:10]) + (" …" if len(ids) > 10 else "")
        raise JudgeOverlapError(
            f"{source}: {len(ids)} of {len(records)} records share a text with the training data of judge "
            f"{judge.name!r} (record ids {shown}); its grades of them would not be independent. Use another "
            "judge, or pass --allow-judge-overlap to run anyway (the overlap is recorded in judge_info).")
    return len(ids)


def judge_quality(judge: "Judge", rows: Sequence[dict] | None = None) -> dict:
    """Precision/recall/F1 of *unsafe* (and accuracy) on the held-out labelled responses, and the share of
    labels equal to the keyword judge's."""
    rows = list(rows) if rows is not None else judge_heldout_rows()
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    pred = [1.0 if p >= 0.5 else 0.0 for p in judge.predict(texts)]
    keyword = [1.0 if p >= 0.5 else 0.0 for p in KeywordJudge().predict(texts)]
    report = judge_report(gold, pred)
    report["agreement_with_keyword"] = sum(a == b for a, b in zip(pred, keyword)) / len(texts)
    report["heldout"] = "package held-out labelled responses (authored test split + built validation/test generations)"
    return report


def judge_info(judge: "Judge", records: Sequence[dict] | None = None, *, quality: bool = True) -> dict:
    """``{"name", "sources", "n_train", "train_sha256", "overlap_with_evaluated", "quality"}`` for results files."""
    info = {"name": getattr(judge, "name", type(judge).__name__),
            "sources": list(getattr(judge, "train_sources", ())),
            "n_train": getattr(judge, "n_train", 0),
            "train_sha256": getattr(judge, "train_sha256", None),
            "overlap_with_evaluated": len(judge_overlap(judge, records)) if records is not None else None}
    if quality:
        if hasattr(judge, "held_out_quality"):
            info["quality"] = judge.held_out_quality()
        else:
            if getattr(judge, "quality", None) is None:
                judge.quality = judge_quality(judge)
            info["quality"] = judge.quality
    return info
