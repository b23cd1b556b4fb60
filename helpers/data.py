"""Data loaders for both papers.

Every loader first looks in the data folder named by ``HELPERS_DATA_DIR`` (CI points it at
``../shared/data``; its README lists the formats) and otherwise loads from the Hugging Face hub with
``datasets``. When neither works, :class:`DataNotAvailableError` says exactly how to get the data.

Records are plain dicts, so they print, serialise and compare easily:

* GSM8K: ``{"question", "answer", "gold"}`` (``gold`` is the number after ``####``)
* SST-2 / TREC / SNIPS / CaseHOLD: ``{"text", "label"}`` with ``label`` a string from ``LABELS[name]``
* SafeEdit: the official JSON schema (see :data:`SAFEEDIT_FIELDS`)
"""
from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable

from .config import data_dir, display_path, resource_path
from .io import atomic_write_json


class DataNotAvailableError(FileNotFoundError):
    """Neither the data folder nor the hub has the data; the message says how to get it."""


class SafeEditFormatError(ValueError):
    """A SafeEdit file that does not follow the official schema (names file, record and field)."""


# ----------------------------------------------------------------------------------------------------
# Generic plumbing
# ----------------------------------------------------------------------------------------------------
def _local(*parts: str) -> Path | None:
    root = data_dir()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def _from_hub(hub_id: str, *args, what: str, local_hint: str | None, **kwargs):
    try:
        import datasets  # noqa: F401
        from datasets import load_dataset
    except ImportError as err:  # pragma: no cover
        raise DataNotAvailableError(_how_to_get(what, local_hint, hub_id, "the `datasets` package is not installed")) from err
    try:
        return load_dataset(hub_id, *args, **kwargs)
    except Exception as err:  # network errors, gated datasets, unknown ids …
        raise DataNotAvailableError(_how_to_get(what, local_hint, hub_id, f"hub error: {type(err).__name__}")) from err


def _how_to_get(what: str, local_hint: str | None, hub_id: str | None, why: str | None = None) -> str:
    """The one sentence a missing data set raises: the data set, the data folder's state and what it should
    contain, and the hub id (``why``: the hub's failure, in brackets at the end). ``local_hint=None``: the data
    set is on the hub only (a data folder cannot provide it)."""
    reason = f" ({why})" if why else ""
    if local_hint is None:
        return (f"{what} is not available: it is only on the Hugging Face hub (a HELPERS_DATA_DIR folder does "
                f"not provide it), so make the hub reachable to load {hub_id!r}{reason}.")
    where = data_dir()
    folder = f"HELPERS_DATA_DIR={display_path(where)}" if where else "HELPERS_DATA_DIR is not set"
    hub = (f" or make the Hugging Face hub reachable to load {hub_id!r}" if hub_id
           else " (it is not on the hub in a form this loader reads)")
    return (f"{what} is not available ({folder}): set HELPERS_DATA_DIR to a folder containing {local_hint} "
            f"(the course's shared data folder, e.g. `export HELPERS_DATA_DIR=../shared/data`){hub}{reason}.")


def _check_split(split: str, allowed: tuple[str, ...], what: str) -> None:
    if split not in allowed:
        raise ValueError(f"{what}: unknown split {split!r}; choose one of {allowed}")


def _limit(records: list[dict], limit: int | None) -> list[dict]:
    """The first ``limit`` records (``None``: all); a limit below 1 is an error, never "all but one"."""
    if limit is None:
        return records
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a whole number ≥ 1 (or None for all records), got {limit!r}")
    return records[:limit]


# ----------------------------------------------------------------------------------------------------
# GSM8K and answer extraction
# ----------------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])|(?<![\w.])-?\$?\.\d+")


def normalize_number(text: str) -> str | None:
    """``"$1,234.50"`` → ``"1234.5"``, ``"-3.0"`` → ``"-3"``; ``None`` when ``text`` is no number."""
    from .arithmetic import parse_decimal

    value = parse_decimal(text)
    if value is None:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_gold(answer: str) -> str:
    """The gold answer of a GSM8K solution: the number after ``####``."""
    if "####" not in answer:
        raise ValueError(f"GSM8K answer has no '####' marker: {answer[-80:]!r}")
    value = normalize_number(answer.split("####")[-1])
    if value is None:
        raise ValueError(f"GSM8K answer has no number after '####': {answer[-80:]!r}")
    return value


def extract_prediction(text: str | None) -> str | None:
    """The number a model's answer commits to, or ``None`` when it gives no number.

    Order of preference: the number after ``####``; after "the answer is" / "answer:"; inside
    ``\\boxed{}``; otherwise the last number in the text. Commas, ``$``, negatives and decimals are
    handled, so ``"The answer is $1,250.00."`` gives ``"1250"``.
    """
    if not text:
        return None
    candidates = []
    if "####" in text:
        candidates.append(text.split("####")[-1])
    match = list(re.finditer(r"answer\s*(?:is|:|=)\s*:?\s*(.{0,40})", text, flags=re.IGNORECASE))
    if match:
        candidates.append(match[-1].group(1))
    boxed = re.findall(r"\\boxed\{([^}]*)\}", text)
    if boxed:
        candidates.append(boxed[-1])
    for chunk in candidates:
        numbers = _NUMBER.findall(chunk)
        if numbers:
            value = normalize_number(numbers[0])
            if value is not None:
                return value
    numbers = _NUMBER.findall(text)
    for raw in reversed(numbers):
        value = normalize_number(raw)
        if value is not None:
            return value
    return None


def answers_match(prediction: str | None, gold: str) -> bool:
    """Numeric equality of an extracted prediction and a gold answer."""
    if prediction is None:
        return False
    try:
        return Decimal(prediction) == Decimal(gold)
    except InvalidOperation:
        return False


def load_gsm8k(split: str = "train", limit: int | None = None) -> list[dict]:
    """GSM8K as ``[{"question", "answer", "gold"}]`` (train 7,473; the data folder's test has 1,000)."""
    _check_split(split, ("train", "test"), "GSM8K")
    path = _local("gsm8k", f"{split}.jsonl")
    if path is not None:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    else:
        ds = _from_hub("openai/gsm8k", "main", split=split, what="GSM8K", local_hint="gsm8k/{train,test}.jsonl")
        rows = [dict(r) for r in ds]
    records = [{"question": r["question"], "answer": r["answer"], "gold": extract_gold(r["answer"])} for r in rows]
    return _limit(records, limit)


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


# ----------------------------------------------------------------------------------------------------
# General-performance data (SafeEdit's KQA / Csum) and instruction data (D_cons)
# ----------------------------------------------------------------------------------------------------
def load_triviaqa(limit: int | None = None) -> list[dict]:
    """TriviaQA questions ``{"question", "answer", "aliases"}`` (data folder: 3,000 validation questions)."""
    path = _local("triviaqa", "triviaqa_sm_sub.jsonl")
    records = []
    if path is not None:
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                r = json.loads(line)
                question = r["context"].removeprefix("Question:").removesuffix("Answer:").strip()
                records.append({"question": question, "answer": r["answer"], "aliases": list(r["aliases"])})
    else:
        ds = _from_hub("mandarjoshi/trivia_qa", "rc.nocontext", split="validation", what="TriviaQA",
                       local_hint="triviaqa/triviaqa_sm_sub.jsonl")
        records = [{"question": r["question"], "answer": r["answer"]["value"], "aliases": list(r["answer"]["aliases"])}
                   for r in ds]
    return _limit(records, limit)


def load_xsum(limit: int | None = None) -> list[dict]:
    """XSum articles ``{"id", "document", "summary"}`` (data folder: 1,000 test articles)."""
    path = _local("xsum", "xsum_test_1000.jsonl")
    if path is not None:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    else:
        ds = _from_hub("EdinburghNLP/xsum", split="test", what="XSum", local_hint="xsum/xsum_test_1000.jsonl")
        records = [{"id": r["id"], "document": r["document"], "summary": r["summary"]} for r in ds]
    return _limit(records, limit)


def load_instructions(limit: int | None = None) -> list[dict]:
    """Instruction-following pairs ``{"instruction", "input", "output"}`` (Alpaca-style)."""
    path = _local("instructions", "alpaca_libre_ok.jsonl")
    if path is not None:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    else:
        rows = [dict(r) for r in _from_hub("tatsu-lab/alpaca", split="train", what="Instruction data",
                                            local_hint="instructions/alpaca_libre_ok.jsonl")]
    records = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]} for r in rows]
    return _limit(records, limit)


# ----------------------------------------------------------------------------------------------------
# SafeEdit (official JSON schema)
# ----------------------------------------------------------------------------------------------------
SAFEEDIT_CATEGORIES = [
    "illegal activities", "physical harm", "offensiveness", "unfairness and bias", "ethics and morality",
    "Political Sensitivity", "mental harm", "privacy and property", "Pornography",
]
#: Top-level fields of a SafeEdit record and their types.
SAFEEDIT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": int,
    "unsafety category": str,
    "adversarial prompt": str,
    "question": str,
    "attack category": str,
    "attack name": str,
    "unsafe generation": str,
    "safe generation": str,
    "knowledge constrain": dict,
}
#: Fields inside ``generalization test`` (present in test/validation records, absent in train records).
GENERALIZATION_FIELDS: dict[str, type] = {
    "test input of only harmful question": str,
    "test input of other attack prompt input": str,
    "attack_category": str,
    "attack_name": str,
    "test input of other question input": str,
    "test input of other questions and attack prompts": str,
}
KNOWLEDGE_FIELDS: dict[str, type] = {"prompt": str, "answer": str}
#: The five evaluation inputs of a record: metric name → field (``None``: top-level adversarial prompt).
SAFEEDIT_INPUTS = {
    "DS": ("adversarial prompt",),
    "DG_onlyQ": ("generalization test", "test input of only harmful question"),
    "DG_otherA": ("generalization test", "test input of other attack prompt input"),
    "DG_otherQ": ("generalization test", "test input of other question input"),
    "DG_otherAQ": ("generalization test", "test input of other questions and attack prompts"),
}


def _type_name(t) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def validate_safeedit_record(record: Any, *, source: str = "<records>", index: int = 0,
                             require_generalization: bool = False) -> None:
    """Raise :class:`SafeEditFormatError` naming ``source``, the record id and the field if ``record`` is bad."""
    if not isinstance(record, dict):
        raise SafeEditFormatError(f"{source}: record #{index} is a {type(record).__name__}, expected a JSON object")
    rid = record.get("id", f"#{index} (no id)")

    def check(obj: dict, fields: dict, prefix: str = "") -> None:
        for name, typ in fields.items():
            if name not in obj:
                raise SafeEditFormatError(f"{source}: record id {rid}: missing field '{prefix}{name}'")
            value = obj[name]
            if typ is int and isinstance(value, bool) or not isinstance(value, typ):
                raise SafeEditFormatError(
                    f"{source}: record id {rid}: field '{prefix}{name}' should be {_type_name(typ)}, "
                    f"got {type(value).__name__}"
                )

    check(record, SAFEEDIT_FIELDS)
    check(record["knowledge constrain"], KNOWLEDGE_FIELDS, "knowledge constrain/")
    if "generalization test" in record or require_generalization:
        if not isinstance(record.get("generalization test"), dict):
            raise SafeEditFormatError(
                f"{source}: record id {rid}: field 'generalization test' should be an object with "
                f"{sorted(GENERALIZATION_FIELDS)}"
            )
        check(record["generalization test"], GENERALIZATION_FIELDS, "generalization test/")


def validate_safeedit(records: Any, *, source: str = "<records>", require_generalization: bool = False) -> list[dict]:
    """Validate a list of SafeEdit records; returns it unchanged or raises :class:`SafeEditFormatError`."""
    if not isinstance(records, list):
        raise SafeEditFormatError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
    seen = set()
    for index, record in enumerate(records):
        validate_safeedit_record(record, source=source, index=index, require_generalization=require_generalization)
        if record["id"] in seen:
            raise SafeEditFormatError(f"{source}: record id {record['id']}: duplicate id")
        seen.add(record["id"])
    return records


def read_safeedit(path: str | Path, *, require_generalization: bool = False) -> list[dict]:
    """Read and validate a SafeEdit JSON file (official schema)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SafeEdit file not found: {path}")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SafeEditFormatError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    except UnicodeDecodeError as err:
        raise SafeEditFormatError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from err
    return validate_safeedit(records, source=str(path), require_generalization=require_generalization)


def write_safeedit(records: list[dict], path: str | Path, *, require_generalization: bool = False) -> Path:
    """Validate, then write records atomically in the official schema (nothing is written if invalid)."""
    validate_safeedit(records, source=str(path), require_generalization=require_generalization)
    return atomic_write_json(path, records, indent=4)


BUILT_SAFEEDIT = resource_path("safeedit_built")


SAFEEDIT_HUB_ID = "zjunlp/SafeEdit"
#: ``load_safeedit`` names → (hub split, number of leading records) when the data folder lacks the file.
SAFEEDIT_HUB_SUBSETS = {"sample": ("test", 7), "three": ("train", 3)}


def _safeedit_from_hub(split: str, *, what: str, local_hint: str) -> list[dict]:
    """Records of the gated ``zjunlp/SafeEdit`` split; a refused access says how to get it."""
    try:
        ds = _from_hub(SAFEEDIT_HUB_ID, split=split, what=what, local_hint=local_hint)
    except DataNotAvailableError as err:
        cause = f"{err.__cause__}".lower()
        if any(word in cause for word in ("gated", "401", "403", "unauthorized", "forbidden", "authenticated")):
            raise DataNotAvailableError(
                f"{what}: access to the gated dataset {SAFEEDIT_HUB_ID!r} was refused. Accept its terms on the "
                "dataset's hub page (logged in), then give this machine a token: `export HF_TOKEN=...` (on Colab, "
                "add HF_TOKEN under Secrets) — or set HELPERS_DATA_DIR to a folder containing "
                f"{local_hint}.") from err
        raise
    return [dict(r) for r in ds]


def load_safeedit(which: str = "sample", split: str = "test", limit: int | None = None) -> list[dict]:
    """SafeEdit records in the official schema.

    ``which``:
      * ``"sample"`` — the 7 official test records of the data folder (``SafeEdit_test_sample.json``); without
        it, the first 7 records of the hub's test split (ids 0–6, the same records)
      * ``"three"`` — the official 3 training instances for editing (no generalization inputs); without the
        data folder, the first 3 records of the hub's train split
      * ``"built"`` — the small set this project builds in chapter 01 (``helpers/resources/safeedit_built/{split}.json``)
      * ``"official"`` — the full ``zjunlp/SafeEdit`` from the hub (gated; accept its terms first)
      * a path to any JSON file in the official schema
    """
    files = {"sample": "SafeEdit_test_sample.json", "three": "three_instances_for_editing.json"}
    if which in files:
        path = _local("safeedit", files[which])
        if path is not None:
            return _limit(read_safeedit(path), limit)
        # the hub: the sample is the official test split's first 7 records (ids 0-6); the three instances are
        # the train split's first 3 (the official three-instance file itself is not on the hub)
        hub_split, count = SAFEEDIT_HUB_SUBSETS[which]
        rows = _safeedit_from_hub(hub_split, what=f"The SafeEdit {which!r} records",
                                  local_hint=f"safeedit/{files[which]}")
        return _limit(validate_safeedit(rows[:count], source=f"zjunlp/SafeEdit ({hub_split})"), limit)
    if which == "built":
        path = BUILT_SAFEEDIT / f"{split}.json"
        if not path.exists():
            raise DataNotAvailableError(
                f"{path} does not exist: build it with notebooks/01_build_safeedit.ipynb or "
                "`python -m helpers safeedit-build --out helpers/resources/safeedit_built`.")
        return _limit(read_safeedit(path), limit)
    if which == "official":
        rows = _safeedit_from_hub(split, what="SafeEdit", local_hint="safeedit/*.json")
        return _limit(validate_safeedit(rows, source=f"zjunlp/SafeEdit ({split})"), limit)
    return _limit(read_safeedit(which), limit)
