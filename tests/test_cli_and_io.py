"""`python -m helpers info`, the CLI registry, and the atomic/append-only file helpers."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.cli import COMMANDS, build_parser
from helpers.common.io import append_jsonl, atomic_write_json, read_jsonl


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


# ----------------------------------------------------------------------------------------------------
# RunLog: the resume mechanism behind every resumable command
# ----------------------------------------------------------------------------------------------------
def test_runlog_round_trip(tmp_path):
    from helpers.common.io import RunLog, settings_hash

    path = tmp_path / "sub" / "run.log.jsonl"
    log = RunLog.open(path, {"lr": 1e-3, "steps": 10})
    assert log.hash == settings_hash({"steps": 10, "lr": 1e-3})  # key order does not matter
    assert log.done() == {} and not path.exists()  # opening writes nothing
    written = log.append({"id": 1, "value": [1, 2]}, key="record 1")
    assert written == {"run": log.hash, "key": "record 1", "id": 1, "value": [1, 2]}
    log.append({"id": 2}, key="record 2")
    again = RunLog.open(path, {"steps": 10, "lr": 1e-3})
    assert again.done() == {"record 1": written, "record 2": {"run": log.hash, "key": "record 2", "id": 2}}
    assert "record 1" in again and again.get("record 3") is None
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["record 1", "record 2"]
    again.append({"id": 1, "value": "newer"}, key="record 1")  # the last one wins
    assert RunLog.open(path, {"steps": 10, "lr": 1e-3}).get("record 1")["value"] == "newer"


def test_runlog_settings_hash_separates_runs(tmp_path):
    from helpers.common.io import RunLog

    path = tmp_path / "run.log.jsonl"
    a = RunLog.open(path, {"lr": 1e-3})
    a.append({"x": "a"}, key="k")
    b = RunLog.open(path, {"lr": 5e-3})
    assert b.hash != a.hash and b.done() == {} and b.other_runs() == {a.hash}
    b.append({"x": "b"}, key="k")
    assert RunLog.open(path, {"lr": 1e-3}).get("k")["x"] == "a"
    assert RunLog.open(path, {"lr": 5e-3}).get("k")["x"] == "b"
    assert len(RunLog.open(path, {"lr": 1e-3}).records()) == 2  # both runs' records are kept


def test_runlog_recovers_a_torn_last_line(tmp_path, capsys):
    from helpers.common.io import RunLog

    path = tmp_path / "run.log.jsonl"
    log = RunLog.open(path, {"n": 1})
    log.append({"i": 1}, key="1")
    log.append({"i": 2}, key="2")
    with open(path, "a", encoding="utf-8") as handle:  # a process killed half-way through a line
        handle.write('{"run": "' + log.hash + '", "key": "3", "i": 3, "te')
    reopened = RunLog.open(path, {"n": 1})
    assert sorted(reopened.done()) == ["1", "2"]
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "incomplete" in err and "run.log.jsonl" in err
    reopened.append({"i": 3}, key="3")
    assert capsys.readouterr().err == ""  # warned once, when reading
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["i"] for line in lines] == [1, 2, 3]  # every line complete, none glued
    assert sorted(RunLog.open(path, {"n": 1}).done()) == ["1", "2", "3"]
    assert capsys.readouterr().err == ""


def test_append_jsonl_cuts_a_torn_line_instead_of_gluing_onto_it(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"i": 1})
    with open(log, "a") as handle:
        handle.write('{"i": 2, "tex')
    append_jsonl(log, {"i": 3})
    assert [json.loads(line)["i"] for line in log.read_text().splitlines()] == [1, 3]
    log.write_text('{"i": 1}\n{"i": 2}')  # complete, only the newline missing: kept
    append_jsonl(log, {"i": 3})
    assert [r["i"] for r in read_jsonl(log)] == [1, 2, 3]


def test_runlog_rejects_corruption_in_the_middle_naming_file_and_line(tmp_path):
    from helpers.common.io import RunLog

    path = tmp_path / "run.log.jsonl"
    path.write_bytes(b'{"run": "x", "key": "1"}\n\xff\xfe not text\n{"run": "x", "key": "2"}\n')
    with pytest.raises(ValueError, match=r"run\.log\.jsonl: line 2 is not UTF-8"):
        RunLog.open(path, {})


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_written_files_follow_the_umask(tmp_path, umask):
    import os
    import stat

    from helpers.common.io import RunLog, write_jsonl

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "results.json", {"a": 1})
        write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
        RunLog.open(tmp_path / "run.log.jsonl", {}).append({"a": 1}, key="a")
        append_jsonl(tmp_path / "teacher_log.jsonl", {"a": 1})
    finally:
        os.umask(old)
    for name in ("results.json", "rows.jsonl", "run.log.jsonl", "teacher_log.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_read_json_names_the_file(tmp_path):
    from helpers.common.io import read_json

    (tmp_path / "cut.json").write_text('{"a": ', encoding="utf-8")
    (tmp_path / "latin1.json").write_bytes('{"a": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"cut\.json: not valid JSON"):
        read_json(tmp_path / "cut.json")
    with pytest.raises(ValueError, match=r"latin1\.json: not UTF-8"):
        read_json(tmp_path / "latin1.json")
    with pytest.raises(FileNotFoundError, match="nosuch.json"):
        read_json(tmp_path / "nosuch.json")
