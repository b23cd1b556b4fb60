"""Bad input to the SafeEdit commands: one line ``error: …`` naming the culprit, exit status 2, no traceback,
and caught before any model loads."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBES = [  # (arguments after `python -m helpers`, text the message must name)
    (["safeedit-eval", "--data", "{tmp}/nosuch.json"], "nosuch.json"),
    (["safeedit-eval", "--data", "{tmp}/truncated.json"], "truncated.json"),
    (["safeedit-eval", "--data", "{tmp}/latin1.json"], "latin1.json"),
    (["safeedit-eval", "--data", "built", "--judge", "oracle"], "oracle"),
    (["safeedit-eval", "--data", "built", "--second-judge", "oracle"], "oracle"),
    (["safeedit-eval", "--data", "built", "--general", "kqa,bogus"], "bogus"),
    (["safeedit-eval", "--data", "built", "--general", "kqa", "--general-limit", "kqa=0"], "--general-limit"),
    (["safeedit-eval", "--data", "built", "--option", "lr"], "--option"),
    (["safeedit-eval", "--data", "built", "--method", "dinm", "--option", "no_such_option=1"], "no_such_option"),
    (["safeedit-table", "--data", "built", "--methods", "vanilla", "--method-options", "{bad"], "--method-options"),
    (["safeedit-table", "--data", "built", "--methods", "vanilla", "--second-judge", "oracle"], "oracle"),
    (["safeedit-eval", "--data", "built", "--backend", "vllm:m"], "--backend"),
    (["safeedit-eval", "--data", "built", "--method", "dinm", "--backend", "openai:m"], "--backend"),
    (["safeedit-eval", "--data", "built", "--backend", "openai:m", "--backend-url", "http://127.0.0.1:9/v1"],
     "http://127.0.0.1:9/v1"),
    (["gsm8k-eval", "--data", "test", "--backend", "openai:m", "--backend-url", "http://127.0.0.1:9/v1"],
     "http://127.0.0.1:9/v1"),
]


@pytest.mark.parametrize("argv, culprit", PROBES, ids=[" ".join(a[2:]) or a[0] for a, _ in PROBES])
def test_bad_input_gives_one_error_line_before_any_model_loads(tmp_path, argv, culprit):
    (tmp_path / "truncated.json").write_text('[{"id": 1, "question": "x"', encoding="utf-8")
    (tmp_path / "latin1.json").write_bytes('[{"question": "caf\xe9"}]'.encode("latin-1"))
    out = tmp_path / "out.json"
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "HELPERS_DEBUG": ""})
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Loading weights" not in proc.stderr  # no model was loaded
    assert not out.exists()  # nothing written
