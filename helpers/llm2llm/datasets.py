"""The classification sets of LLM2LLM's chapter 08: SST-2, TREC, SNIPS and CaseHOLD as ``{"text", "label"}``.

Each loader reads ``HELPERS_DATA_DIR`` first and the hub otherwise (SST-2 ``stanfordnlp/sst2``, TREC
``CogComp/trec`` coarse labels, SNIPS ``benayas/snips``, CaseHOLD ``casehold/casehold``); labels are strings
(``positive``, ``NUM``, ``GetWeather``, ``0``–``4``).
"""
from __future__ import annotations

import re
from typing import Any, Callable

from ..common.config import data_dir, display_path
from ..common.datasets import DataNotAvailableError, _check_split, _from_hub, _limit, _local

# ----------------------------------------------------------------------------------------------------
# Classification data sets
# ----------------------------------------------------------------------------------------------------
TREC_COARSE = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]  # the hub's coarse_label order
SNIPS_INTENTS = ["AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook",
                 "SearchCreativeWork", "SearchScreeningEvent"]
LABELS: dict[str, list[str]] = {
    "sst2": ["negative", "positive"],
    "trec": TREC_COARSE,
    "snips": SNIPS_INTENTS,
    "casehold": ["0", "1", "2", "3", "4"],
}


def load_sst2(split: str = "train", limit: int | None = None) -> list[dict]:
    """SST-2 as ``[{"text", "label"}]``, label ``negative``/``positive``.

    ``train`` is GLUE's training set (phrases; ``train.tsv`` + ``dev.tsv`` of the data folder),
    ``test`` is GLUE's validation set (872 sentences), as in most papers.
    """
    _check_split(split, ("train", "test"), "SST-2")
    files = ["train.tsv", "dev.tsv"] if split == "train" else ["test.tsv"]
    paths = [_local("sst2", f) for f in files]
    records = []
    if all(p is not None for p in paths):
        for path in paths:
            lines = path.read_text(encoding="utf-8").split("\n")
            for line in lines[1:]:
                if not line.strip():
                    continue
                sentence, label = line.rsplit("\t", 1)
                records.append({"text": sentence.strip(), "label": LABELS["sst2"][int(label)]})
    else:
        ds = _from_hub("stanfordnlp/sst2", split="train" if split == "train" else "validation",
                       what="SST-2", local_hint="sst2/{train,dev,test}.tsv")
        records = [{"text": r["sentence"].strip(), "label": LABELS["sst2"][int(r["label"])]} for r in ds]
    return _limit(records, limit)


def load_trec(split: str = "train", limit: int | None = None) -> list[dict]:
    """TREC question classification, 6 coarse classes (``ABBR``, ``ENTY``, ``DESC``, ``HUM``, ``LOC``, ``NUM``)."""
    _check_split(split, ("train", "test"), "TREC")
    path = _local("trec", f"{split}.txt")
    if path is not None:
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            tag, question = line.split(" ", 1)
            records.append({"text": question.strip(), "label": tag.split(":")[0]})
    else:
        ds = _from_hub("CogComp/trec", split=split, what="TREC", local_hint="trec/{train,test}.txt")
        records = [{"text": r["text"], "label": TREC_COARSE[int(r["coarse_label"])]} for r in ds]
    return _limit(records, limit)


#: SNIPS on the hub: ``benayas/snips``, a flat copy of the SNIPS NLU benchmark. Its schema (dataset card): one
#: config, columns ``text`` (the request) and ``category`` (the intent name), splits ``train`` (13,084 requests,
#: the size of the data folder's train) and ``test`` (1,400); there is no dev split. Intent names are mapped to
#: :data:`SNIPS_INTENTS` whatever their spelling (``AddToPlaylist``, ``ADD_TO_PLAYLIST``, ``addtoplaylist``).
SNIPS_HUB_ID = "benayas/snips"
SNIPS_LOCAL_HINT = "snips/{train,dev,test}/{seq.in,label}"


def snips_intent(label: Any, *, source: str = "SNIPS") -> str:
    """The intent of :data:`SNIPS_INTENTS` that ``label`` spells (case, ``_``, ``-`` and spaces ignored:
    ``"ADD_TO_PLAYLIST"`` → ``"AddToPlaylist"``); a label that is none of the seven raises ``ValueError``."""
    key = re.sub(r"[^a-z0-9]", "", str(label).lower())
    for intent in SNIPS_INTENTS:
        if intent.lower() == key:
            return intent
    raise ValueError(f"{source}: unknown SNIPS intent label {label!r}; expected one of {SNIPS_INTENTS} "
                     "(any case, with or without underscores)")


def load_snips(split: str = "train", limit: int | None = None) -> list[dict]:
    """SNIPS intents (7 classes): the data folder's JointBERT split (13,084 / 700 / 700), else ``benayas/snips``
    from the hub (train 13,084; test 1,400; no dev split)."""
    _check_split(split, ("train", "dev", "test"), "SNIPS")
    seq, lab = _local("snips", split, "seq.in"), _local("snips", split, "label")
    if seq is not None and lab is not None:
        texts = seq.read_text(encoding="utf-8").split("\n")
        labels = lab.read_text(encoding="utf-8").split("\n")
        if len(texts) != len(labels):
            raise ValueError(f"{seq.parent}: seq.in has {len(texts)} lines but label has {len(labels)}")
        records = [{"text": t.strip(), "label": snips_intent(l.strip(), source=str(lab))}
                   for t, l in zip(texts, labels) if t.strip()]
        return _limit(records, limit)
    if split == "dev":
        where = data_dir()
        folder = f"HELPERS_DATA_DIR={display_path(where)}" if where else "HELPERS_DATA_DIR is not set"
        raise DataNotAvailableError(
            f"The SNIPS dev split is not available ({folder}): set HELPERS_DATA_DIR to a folder containing "
            f"snips/dev/{{seq.in,label}} (the course's shared data folder), as the hub copy {SNIPS_HUB_ID!r} "
            "has only train and test.")
    ds = _from_hub(SNIPS_HUB_ID, split=split, what="SNIPS", local_hint=SNIPS_LOCAL_HINT)
    records = [{"text": r["text"].strip(), "label": snips_intent(r["category"], source=f"{SNIPS_HUB_ID} ({split})")}
               for r in ds if r["text"].strip()]
    return _limit(records, limit)


#: CaseHOLD on the hub: ``casehold/casehold``, config ``all``; fields ``citing_prompt`` (with ``<HOLDING>`` where
#: the holding is cited), ``holding_0`` … ``holding_4`` and ``label`` (the correct holding, ``"0"`` … ``"4"``);
#: splits train / validation / test.
CASEHOLD_HUB_ID = "casehold/casehold"


def load_casehold(split: str = "train", limit: int | None = None) -> list[dict]:
    """CaseHOLD (hub only): ``{"text": citing prompt, "choices": [5 holdings], "label": "0".."4"}``."""
    _check_split(split, ("train", "validation", "test"), "CaseHOLD")
    ds = _from_hub(CASEHOLD_HUB_ID, "all", split=split, what="CaseHOLD", local_hint=None)
    records = []
    for index, r in enumerate(ds):
        label = str(r["label"]).strip()
        if label not in LABELS["casehold"]:
            raise ValueError(f"{CASEHOLD_HUB_ID} ({split}): record #{index} has label {r['label']!r}; "
                             f"expected one of {LABELS['casehold']}")
        records.append({"text": r["citing_prompt"], "choices": [r[f"holding_{i}"] for i in range(5)], "label": label})
    return _limit(records, limit)


CLASSIFICATION_LOADERS: dict[str, Callable[..., list[dict]]] = {
    "sst2": load_sst2, "trec": load_trec, "snips": load_snips, "casehold": load_casehold,
}
