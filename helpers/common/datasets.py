"""Where data comes from: the folder named by ``HELPERS_DATA_DIR`` first, else the Hugging Face hub.

Shared by the loaders of both papers (:mod:`helpers.safeedit.data`, :mod:`helpers.llm2llm.datasets`,
:mod:`helpers.llm2llm.gsm8k`). When neither source works, :class:`DataNotAvailableError` says exactly how to
get the data (the hub id, the local layout, and why the load failed).
"""
from __future__ import annotations

from pathlib import Path

from .config import data_dir, display_path


class DataNotAvailableError(FileNotFoundError):
    """Neither the data folder nor the hub has the data; the message says how to get it."""


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
