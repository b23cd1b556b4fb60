"""Argument checks shared by every command: each runs before any model loads and before anything is written.

A failed check raises ``SystemExit("--flag …: why")``; :func:`helpers.cli.run_guarded` prints it as one line
``error: …`` with exit status 2.
"""
from __future__ import annotations

import os


# ----------------------------------------------------------------------------------------------------
# Checks every command runs before any model loads and before anything is written
# ----------------------------------------------------------------------------------------------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def at_least(args, minimum, *names: str) -> None:
    """``SystemExit`` naming the flag when one of ``args.<name>`` (when set) is below ``minimum``."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise SystemExit(f"{_flag(name)} must be ≥ {minimum:g}, got {value:g}")


def above(args, minimum, *names: str) -> None:
    """``SystemExit`` naming the flag when one of ``args.<name>`` (when set) is not above ``minimum``."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not value > minimum:
            raise SystemExit(f"{_flag(name)} must be > {minimum:g}, got {value:g}")


def _writable_ancestor(path, flag: str):
    from pathlib import Path

    from .config import display_path

    ancestor = Path(path).expanduser().absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SystemExit(f"{flag} {path}: {display_path(ancestor)} is a file, so the folder cannot be created")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SystemExit(f"{flag} {path}: the folder {display_path(ancestor)} is not writable")


def check_output_file(path, flag: str = "--out") -> None:
    """``SystemExit`` naming ``flag`` unless a file can be written at ``path`` (its folder exists or can be
    created, and is writable; ``path`` is not a folder). Nothing is created."""
    from pathlib import Path

    target = Path(path).expanduser()
    if target.is_dir():
        raise SystemExit(f"{flag} {path}: is a folder; give a file name")
    if target.exists() and not os.access(target, os.W_OK):
        raise SystemExit(f"{flag} {path}: the file is not writable")
    _writable_ancestor(target, flag)


def check_output_folder(path, flag: str = "--out") -> None:
    """``SystemExit`` naming ``flag`` unless ``path`` is a writable folder or can be created. Nothing is created."""
    from pathlib import Path

    target = Path(path).expanduser()
    if target.exists():
        if not target.is_dir():
            raise SystemExit(f"{flag} {path}: is a file; give a folder")
        if not os.access(target, os.W_OK | os.X_OK):
            raise SystemExit(f"{flag} {path}: the folder is not writable")
        return
    _writable_ancestor(target, flag)


def check_model_name(name, flag: str = "--model") -> None:
    """``SystemExit`` naming ``flag`` for a model name that cannot be a model (neither the embedded model, a
    local folder nor a hub id); nothing is loaded or downloaded."""
    if name is None:
        return
    from .models import EMBEDDED_ALIASES, ModelNotAvailableError, resolve_model_path

    if name in EMBEDDED_ALIASES:
        return
    try:
        resolve_model_path(name)
    except ModelNotAvailableError as err:
        raise SystemExit(f"{flag} {name}: {err}") from err


def require_records(records, source, what: str = "records") -> list:
    """``records`` as a list; ``SystemExit`` naming ``source`` when there are none (an empty data set)."""
    records = list(records)
    if not records:
        raise SystemExit(f"{source}: no {what} (an empty data set)")
    return records
