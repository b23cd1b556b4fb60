"""Deprecated entry point: ``python -m helpers.dinm sweep …`` is ``python -m helpers dinm-sweep …``.

Kept so that commands written before the package moved to subpackages keep working; DINM itself lives in
:mod:`helpers.detox.dinm` and the sweep in :mod:`helpers.detox.sweep`.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # pragma: no cover - exercised in a subprocess by tests/test_bad_input.py
    from .cli import main

    argv = sys.argv[1:]
    if argv[:1] == ["sweep"]:
        argv = argv[1:]
    print("note: `python -m helpers.dinm sweep` is deprecated; use `python -m helpers dinm-sweep`", file=sys.stderr)
    raise SystemExit(main(["dinm-sweep", *argv]))
