"""SafeEdit records: the official schema, its validation, reading and writing, and the loaders.

A record is the official JSON object (see :data:`SAFEEDIT_FIELDS`): the adversarial prompt, the safe and
unsafe generations, the four ``generalization test`` inputs and the ``knowledge constrain`` pair (D_cons).
:func:`load_safeedit` gives the 7 official sample records, the course's built set (package data) or the hub's
``zjunlp/SafeEdit``; :func:`read_safeedit` validates any file and names the record and field that is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..common.config import resource_path
from ..common.datasets import DataNotAvailableError, _from_hub, _limit, _local
from ..common.io import atomic_write_json


class SafeEditFormatError(ValueError):
    """A SafeEdit file that does not follow the official schema (names file, record and field)."""


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
