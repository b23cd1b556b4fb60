"""Command line: ``python -m helpers COMMAND …``.

Each command lives in the module of its paper concept, which provides ``add_arguments(parser)`` and
``main(args) -> int``; this file only lists them, so chapters add commands without touching each other.

Bad input is one line ``error: …`` naming the file, record, field or flag, with exit status 2 and no traceback
(``HELPERS_DEBUG=1`` shows it): argparse's own errors, ``SystemExit("message")`` from a command's checks and the
exceptions of :func:`_user_errors`. Commands check every argument before any model loads and before anything is
written, with the helpers below (:func:`at_least`, :func:`check_output_file`, :func:`check_output_folder`,
:func:`check_model_name`, :func:`require_records`).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

#: command → (module, help). The module defines ``add_arguments`` and ``main``.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("helpers.info", "versions, device, data and cache folders, embedded model status"),
    "prepare-model": ("helpers.info", "download and convert the embedded model now (about a minute, once)"),
    "safeedit-build": ("helpers.safeedit_build", "build a SafeEdit-style benchmark (chapter 01)"),
    "safeedit-eval": ("helpers.harness", "evaluate a detoxification method on SafeEdit records (chapters 02-06)"),
    "safeedit-table": ("helpers.baselines", "the DINM paper's main table: every method on SafeEdit records (chapter 06)"),
    "llm2llm": ("helpers.llm2llm", "run the LLM2LLM loop (chapters 07-08)"),
    "gsm8k-eval": ("helpers.llm2llm", "evaluate a model on GSM8K test problems (chapter 07)"),
    "run-all": ("helpers.run_all", "execute every notebook in small mode and write results/summary.md"),
}


def _command_function(module_name: str, command: str, attr: str):
    module = importlib.import_module(module_name)
    specific = f"{attr}_{command.replace('-', '_')}"
    return getattr(module, specific, None) or getattr(module, attr)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as one line ``error: …`` (exit status 2) like every other user error."""

    def error(self, message):  # noqa: D102 (argparse's hook)
        text = " ".join(str(message).split())
        self.exit(2, f"error: {text} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m helpers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(command, help=help_text, description=help_text)
        try:
            _command_function(module_name, command, "add_arguments")(p)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            p.set_defaults(_missing=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as err:  # --help (0) or argparse's one-line error (2), as a status for in-process callers
        return _exit_status(err)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"error: `{args.command}` is not available in this version ({args._missing} is missing)", file=sys.stderr)
        return 2
    module_name = COMMANDS[args.command][0]
    return run_guarded(_command_function(module_name, args.command, "main"), args)


def run_guarded(function, *args) -> int:
    """``function(*args)`` as an exit status: bad input (``SystemExit("message")`` or one of
    :func:`_user_errors`) becomes one line ``error: …`` and status 2 (``HELPERS_DEBUG=1``: the traceback)."""
    user_errors = _user_errors()
    try:
        return int(function(*args) or 0)
    except SystemExit as err:
        if isinstance(err.code, str):  # a command's own input check: one line, no traceback
            return _user_error(err.code, err)
        return _exit_status(err)
    except user_errors as err:
        return _user_error(str(err) or type(err).__name__, err)


def _exit_status(err: SystemExit) -> int:
    return 0 if err.code is None else err.code if isinstance(err.code, int) else 1


def _user_errors() -> tuple:
    """Exceptions that mean bad input (a file, a record, a field or a flag), reported as ``error: …``."""
    import json

    from .backend import BackendError
    from .data import DataNotAvailableError, SafeEditFormatError
    from .judge import JudgeNotAvailableError, JudgeOverlapError
    from .models import ModelNotAvailableError
    from .teacher import TeacherError

    return (BackendError, DataNotAvailableError, SafeEditFormatError, JudgeOverlapError, JudgeNotAvailableError,
            ModelNotAvailableError, TeacherError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError, json.JSONDecodeError, UnicodeDecodeError, ValueError)


def _user_error(message: str, err: BaseException | None = None) -> int:
    """Print ``error: …`` (the first line of ``message``) and return exit status 2; ``HELPERS_DEBUG=1`` re-raises
    to show the traceback."""
    if err is not None and os.environ.get("HELPERS_DEBUG", "").strip() not in ("", "0"):
        if isinstance(err, SystemExit):
            raise RuntimeError(err.code) from err  # the traceback of the check that refused the input
        raise err
    text = " ".join(str(message).split())
    print(text if text.startswith("error:") else f"error: {text}", file=sys.stderr)
    return 2


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
