"""`python -m helpers info`, the CLI registry, and the atomic/append-only file helpers."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.cli import COMMANDS, build_parser
from helpers.io import append_jsonl, atomic_write_json, read_jsonl


def test_info_runs_and_reports(shared_data):
    proc = subprocess.run([sys.executable, "-m", "helpers", "info", "--json"], capture_output=True, text=True,
                          check=True)
    info = json.loads(proc.stdout)
    assert info["packages"]["torch"] and info["device"].startswith(("cpu", "cuda", "mps"))
    from pathlib import Path

    # printed relative to the working folder (no machine path in saved outputs), and it names the same folder
    assert not info["data_dir"].startswith("/") and Path(info["data_dir"]).resolve() == shared_data.resolve()
    assert info["embedded_model"]["cached"] in (True, False)


def test_every_registered_command_parses_help():
    parser = build_parser()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command, "--help"])
        assert exit_info.value.code == 0


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_jsonl_log_survives_a_truncated_last_line(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"i": 1})
    append_jsonl(log, {"i": 2})
    with open(log, "a") as handle:
        handle.write('{"i": 3, "tex')  # a write interrupted half-way
    assert [r["i"] for r in read_jsonl(log)] == [1, 2]


def test_jsonl_log_rejects_corruption_in_the_middle(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"i": 1}\nnot json\n{"i": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(read_jsonl(log))
