"""Command line: ``python -m helpers COMMAND …``.

Each command lives in the module of its paper concept, which provides ``add_arguments(parser)`` and
``main(args) -> int``; this file only lists them, so chapters add commands without touching each other.
"""
from __future__ import annotations

import argparse
import importlib
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"error: `{args.command}` is not available in this version ({args._missing} is missing)", file=sys.stderr)
        return 2
    module_name = COMMANDS[args.command][0]
    user_errors = _user_errors()
    try:
        return int(_command_function(module_name, args.command, "main")(args) or 0)
    except SystemExit as err:
        if isinstance(err.code, str):  # a command's own input check: one line, no traceback
            return _user_error(err.code)
        raise
    except user_errors as err:
        return _user_error(str(err) or type(err).__name__, err)


def _user_errors() -> tuple:
    """Exceptions that mean bad input (a file, a record, a field or a flag), reported as ``error: …``."""
    import json

    from .backend import BackendError
    from .data import DataNotAvailableError, SafeEditFormatError
    from .judge import JudgeNotAvailableError, JudgeOverlapError
    from .models import ModelNotAvailableError

    return (BackendError, DataNotAvailableError, SafeEditFormatError, JudgeOverlapError, JudgeNotAvailableError,
            ModelNotAvailableError, FileNotFoundError, IsADirectoryError, PermissionError, json.JSONDecodeError,
            UnicodeDecodeError, ValueError)


def _user_error(message: str, err: BaseException | None = None) -> int:
    """Print ``error: …`` (the first line of ``message``) and return exit status 2; ``HELPERS_DEBUG=1`` re-raises
    to show the traceback."""
    import os

    if err is not None and os.environ.get("HELPERS_DEBUG", "").strip() not in ("", "0"):
        raise err
    text = " ".join(str(message).split())
    print(text if text.startswith("error:") else f"error: {text}", file=sys.stderr)
    return 2
