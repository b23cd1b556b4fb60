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
    "info": ("helpers.common.info", "versions, device, data and cache folders, embedded model status"),
    "prepare-model": ("helpers.common.info", "download and convert the embedded model now (about a minute, once)"),
    "safeedit-build": ("helpers.safeedit.build_cli", "build a SafeEdit-style benchmark (chapter 01)"),
    "safeedit-eval": ("helpers.detox.evaluate", "evaluate a detoxification method on SafeEdit records (chapters 02-06)"),
    "safeedit-table": ("helpers.detox.table", "the DINM paper's main table: every method on SafeEdit records (chapter 06)"),
    "llm2llm": ("helpers.llm2llm.commands", "run the LLM2LLM loop (chapters 07-08)"),
    "llm2llm-grid": ("helpers.llm2llm.grid", "LLM2LLM vs seed-only, AugGPT and EDA over data sets, seeds and iterations (chapter 08)"),
    "llm2llm-teacher-quality": ("helpers.llm2llm.teacher_quality", "a teacher's acceptance rate and label agreement on a run's wrong seeds (chapter 08)"),
    "gsm8k-eval": ("helpers.llm2llm.gsm8k", "evaluate a model on GSM8K test problems (chapter 07)"),
    "dinm-sweep": ("helpers.detox.sweep", "DINM's hyper-parameters one factor at a time, on validation records (chapter 04)"),
    "run-all": ("helpers.common.run_all", "execute every notebook in small mode and write results/summary.md"),
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
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for the results' "command"
    command = _command_function(module_name, args.command, "main")

    def checked(arguments):
        if arguments.command != "info":  # info reports the settings, bad ones included
            _check_environment()
        return command(arguments)

    return run_guarded(checked, args)


def _check_environment() -> None:
    """The course's settings read from the environment, checked before any command loads a model: an unknown
    ``HELPERS_DTYPE``, ``HELPERS_ENGINE`` or ``HELPERS_GENERATION`` is bad input (one ``error:`` line)."""
    from .common.generation import ENGINES as GENERATION_ENGINES
    from .common.models import _dtype_setting
    from .common.training import ENGINES as TRAINING_ENGINES

    _dtype_setting()
    for name, allowed in (("HELPERS_ENGINE", TRAINING_ENGINES), ("HELPERS_GENERATION", GENERATION_ENGINES)):
        value = os.environ.get(name, "").strip().lower()
        if value and value not in allowed:
            raise ValueError(f"{name}={os.environ[name]!r}: choose one of {', '.join(allowed)}")


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

    from .common.backend import BackendError
    from .common.datasets import DataNotAvailableError
    from .common.models import ModelNotAvailableError
    from .common.teacher import TeacherError
    from .safeedit.data import SafeEditFormatError
    from .safeedit.judge import JudgeNotAvailableError
    from .safeedit.judge_data import JudgeOverlapError

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
