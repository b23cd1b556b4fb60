"""Bad input to every command: one line ``error: …`` naming the culprit (file, record, field or flag), exit
status 2, no traceback, caught before any model loads and before anything is written.

The probes run in-process through :func:`helpers.cli.main` with the model loaders replaced by a sentinel that fails the test when called; a
few run as real processes to check the entry points themselves.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TEACHER_URL = "http://127.0.0.1:{port}/v1"

# (command, arguments, text the message must name, extra environment). "helpers" is `python -m helpers`.
# {tmp} is the test's folder (see _inputs for its files), {port} a closed
# local port. `--out {tmp}/out.json` is appended to the SafeEdit commands that do not name their own.
PROBES = [
    # --- safeedit-eval: files, records, fields
    ("helpers", ["safeedit-eval", "--data", "{tmp}/nosuch.json"], "nosuch.json", {}),
    ("helpers", ["safeedit-eval", "--data", "{tmp}/truncated.json"], "truncated.json", {}),
    ("helpers", ["safeedit-eval", "--data", "{tmp}/latin1.json"], "latin1.json", {}),
    ("helpers", ["safeedit-eval", "--data", "{tmp}/empty.json"], "empty.json", {}),
    ("helpers", ["safeedit-eval", "--data", "{tmp}/object.json"], "object.json", {}),
    ("helpers", ["safeedit-eval", "--data", "{tmp}/nofield.json"], "adversarial prompt", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "sft", "--train-data", "{tmp}/empty.json"],
     "empty.json", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "sft", "--train-data", "{tmp}/latin1.json"],
     "latin1.json", {}),
    # --- safeedit-eval: judges, general metrics, methods, method options, model
    ("helpers", ["safeedit-eval", "--data", "built", "--judge", "oracle"], "oracle", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--second-judge", "oracle"], "oracle", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--general", "kqa,bogus"], "bogus", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--general", "kqa", "--general-limit", "kqa=0"],
     "--general-limit", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "nosuch"], "nosuch", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--option", "lr"], "--option", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "dinm", "--option", "no_such_option=1"],
     "no_such_option", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "sft", "--option", "checkpoint_dir=ck",
                 "--option", "save_steps=0"], "save_steps", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "sft", "--option", "checkpoint_dir={tmp}/latin1.json"],
     "latin1.json", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "dpo", "--option", "save_steps=5"],
     "save_steps needs checkpoint_dir", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "rlhf", "--option", "checkpoint_dir=ck"],
     "rlhf: checkpoint resume", {}),
    # the course's settings from the environment
    ("helpers", ["safeedit-eval", "--data", "built", "--limit", "1"], "HELPERS_GENERATION='vllm'",
     {"HELPERS_GENERATION": "vllm"}),
    ("helpers", ["gsm8k-eval", "--data", "test", "--limit", "1", "--out", "{tmp}/g.json"], "HELPERS_ENGINE='fast'",
     {"HELPERS_ENGINE": "fast"}),
    ("helpers", ["safeedit-eval", "--data", "built", "--limit", "1"], "HELPERS_DTYPE", {"HELPERS_DTYPE": "int4"}),
    # under a 2-process launch a trained baseline's global batch must split over the ranks
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "dpo", "--option", "batch_size=3"],
     "batch_size 3 must be a multiple of the 2 processes", {"WORLD_SIZE": "2"}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla,rlhf", "--option", "rlhf.num_generations=3"],
     "num_generations × prompts_per_step 3 must be a multiple of the 2 processes", {"WORLD_SIZE": "2"}),
    ("helpers", ["safeedit-eval", "--data", "built", "--model", "./no-such-model"], "no-such-model", {}),
    # --- safeedit-eval: limits, output, --log
    ("helpers", ["safeedit-eval", "--data", "built", "--limit", "0"], "--limit", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--limit", "-1"], "--limit", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--limit", "x"], "--limit", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--batch-size", "0"], "--batch-size", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--max-new-tokens", "0"], "--max-new-tokens", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--general-instances", "0"], "--general-instances", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--out", "{tmp}/afile/out.json"], "--out", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--out", "{tmp}"], "--out", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--log", "{tmp}/run.log.jsonl"], "--log", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "dinm", "--log", "{tmp}/afile/run.log.jsonl"],
     "--log", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--judge", "keyword"], "HELPERS_SCALE",
     {"HELPERS_SCALE": "huge"}),
    # --- safeedit-table
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla", "--method-options", "{bad"],
     "--method-options", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla", "--second-judge", "oracle"],
     "oracle", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla,nosuch", "--no-isolate"], "nosuch", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla,nosuch"], "nosuch", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", ","], "--methods", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla,dinm",
                 "--method-options", '{"dinm": {"bogus_option": 1}}'], "bogus_option", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla",
                 "--method-options", '{"nosuch": {}}'], "nosuch", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla", "--option", "lr=1"], "--option", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla", "--option", "nosuch.lr=1"], "nosuch", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "dinm", "--option", "dinm.bogus=1"], "bogus", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla", "--general", "bogus"], "bogus", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla", "--limit", "0"], "--limit", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla", "--train-limit", "0"],
     "--train-limit", {}),
    ("helpers", ["safeedit-table", "--data", "{tmp}/empty.json", "--methods", "vanilla"], "empty.json", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla", "--train-data", "{tmp}/empty.json"],
     "empty.json", {}),
    ("helpers", ["safeedit-table", "--data", "built", "--methods", "vanilla", "--out", "{tmp}/afile/t.json"],
     "--out", {}),
    # --- safeedit-build
    ("helpers", ["safeedit-build", "--out", "{tmp}/build", "--per-category", "0"], "--per-category", {}),
    ("helpers", ["safeedit-build", "--out", "{tmp}/build", "--attacks", "0"], "--attacks", {}),
    ("helpers", ["safeedit-build", "--out", "{tmp}/build", "--attacks", "49"], "--attacks", {}),
    ("helpers", ["safeedit-build", "--out", "{tmp}/build", "--chunk-size", "0"], "--chunk-size", {}),
    ("helpers", ["safeedit-build", "--out", "{tmp}/build", "--max-new-tokens", "0"], "--max-new-tokens", {}),
    ("helpers", ["safeedit-build", "--out", "{tmp}/afile"], "--out", {}),
    ("helpers", ["safeedit-build", "--out", "{tmp}/build", "--teacher", "no-such-teacher"], "no-such-teacher", {}),
    ("helpers", ["safeedit-build", "--out", "{tmp}/build", "--teacher", "openai:some-model"], TEACHER_URL,
     {"HELPERS_TEACHER_BASE_URL": TEACHER_URL}),
    ("helpers", ["safeedit-build", "--out", "{tmp}/build", "--review-file", "{tmp}/review.jsonl"], "review.jsonl",
     {}),
    ("helpers", ["safeedit-build", "--out", "{tmp}/build"], "HELPERS_SCALE", {"HELPERS_SCALE": "huge"}),
    # --- llm2llm: seed size ≤ pool for every data set, limits, output, teacher, student
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "999999", "--iterations", "1", "--out",
                 "{tmp}/run"], "--seed-size", {}),
    ("helpers", ["llm2llm", "--dataset", "sst2", "--seed-size", "999999", "--iterations", "1", "--out",
                 "{tmp}/run"], "--seed-size", {}),
    ("helpers", ["llm2llm", "--dataset", "trec", "--seed-size", "999999", "--iterations", "1", "--out",
                 "{tmp}/run"], "--seed-size", {}),
    ("helpers", ["llm2llm", "--dataset", "snips", "--seed-size", "999999", "--iterations", "1", "--out",
                 "{tmp}/run"], "--seed-size", {}),
    ("helpers", ["llm2llm", "--dataset", "casehold", "--seed-size", "4", "--iterations", "1", "--out",
                 "{tmp}/run"], "CaseHOLD", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "0", "--iterations", "1", "--out", "{tmp}/run"],
     "--seed-size", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "-1", "--out", "{tmp}/run"],
     "--iterations", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--test-size", "0",
                 "--out", "{tmp}/run"], "--test-size", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--per-wrong", "0",
                 "--out", "{tmp}/run"], "--per-wrong", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--epochs", "0",
                 "--out", "{tmp}/run"], "--epochs", {}),
    ("helpers", ["llm2llm", "--dataset", "nosuch", "--seed-size", "4", "--iterations", "1", "--out", "{tmp}/run"],
     "nosuch", {}),
    ("helpers", ["llm2llm", "--dataset", "trec", "--seed-size", "4", "--iterations", "1", "--max-new-tokens", "5",
                 "--out", "{tmp}/run"], "--max-new-tokens", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--out", "{tmp}/afile"],
     "--out", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--student",
                 "./no-such-model", "--out", "{tmp}/run"], "no-such-model", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--teacher",
                 "no-such-teacher", "--out", "{tmp}/run"], "no-such-teacher", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--teacher",
                 "openai:some-model", "--out", "{tmp}/run"], TEACHER_URL, {"HELPERS_TEACHER_BASE_URL": TEACHER_URL}),
    # --- gsm8k-eval
    ("helpers", ["gsm8k-eval", "--data", "{tmp}/empty.jsonl", "--out", "{tmp}/r.json"], "empty.jsonl", {}),
    ("helpers", ["gsm8k-eval", "--data", "{tmp}/latin1.jsonl", "--out", "{tmp}/r.json"], "latin1.jsonl", {}),
    ("helpers", ["gsm8k-eval", "--data", "{tmp}/truncated.json", "--out", "{tmp}/r.json"], "truncated.json", {}),
    ("helpers", ["gsm8k-eval", "--data", "{tmp}/nosuch.jsonl", "--out", "{tmp}/r.json"], "nosuch.jsonl", {}),
    ("helpers", ["gsm8k-eval", "--data", "{tmp}/noquestion.jsonl", "--out", "{tmp}/r.json"], "'question'", {}),
    ("helpers", ["gsm8k-eval", "--data", "test", "--limit", "0", "--out", "{tmp}/r.json"], "--limit", {}),
    ("helpers", ["gsm8k-eval", "--data", "test", "--out", "{tmp}/afile/r.json"], "--out", {}),
    ("helpers", ["gsm8k-eval", "--data", "test", "--model", "./no-such-model", "--out", "{tmp}/r.json"],
     "no-such-model", {}),
    # --- run-all, unknown command
    ("helpers", ["run-all", "--timeout", "0"], "--timeout", {}),
    ("helpers", ["run-all", "--notebooks", "{tmp}/nosuch.ipynb"], "nosuch.ipynb", {}),
    ("helpers", ["no-such-command"], "no-such-command", {}),
    # --- llm2llm-grid
    ("helpers", ["llm2llm-grid", "--datasets", "gsm8k"], "--datasets", {}),
    ("helpers", ["llm2llm-grid", "--seeds", "a,b"], "--seeds", {}),
    ("helpers", ["llm2llm-grid", "--seed-sizes", "trec=0"], "--seed-sizes", {}),
    ("helpers", ["llm2llm-grid", "--iterations", "0"], "--iterations", {}),
    ("helpers", ["llm2llm-grid", "--out", "{tmp}/afile/grid.json"], "--out", {}),
    # --- llm2llm-teacher-quality
    ("helpers", ["llm2llm-teacher-quality", "--runs", "{tmp}/norun"], "--runs", {}),
    ("helpers", ["llm2llm-teacher-quality", "--runs", "{tmp}/norun", "--teachers", ","], "--teachers", {}),
    ("helpers", ["llm2llm-teacher-quality", "--runs", "{tmp}/norun", "--teacher-max-new-tokens", "0"],
     "--teacher-max-new-tokens", {}),
    # --- llm2llm: the reference's settings
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--out", "{tmp}/r",
                 "--grad-accum", "0"], "--grad-accum", {}),
    ("helpers", ["llm2llm", "--dataset", "trec", "--seed-size", "4", "--iterations", "1", "--out", "{tmp}/r",
                 "--save-steps", "0"], "--save-steps", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--out", "{tmp}/r",
                 "--lr-schedule", "steep"], "--lr-schedule", {}),
    ("helpers", ["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--out", "{tmp}/r",
                 "--warmup-ratio", "1.5"], "--warmup-ratio", {}),
    ("helpers", ["gsm8k-eval", "--data", "test", "--out", "{tmp}/e.json", "--decoding", "hot"], "--decoding", {}),
    ("helpers", ["llm2llm", "--dataset", "trec", "--seed-size", "4", "--iterations", "1", "--out", "{tmp}/r",
                 "--dedup-on", "question"], "--dedup-on", {}),
    # --- python -m helpers dinm-sweep
    ("helpers", ["dinm-sweep", "--limit", "0"], "--limit", {}),
    ("helpers", ["dinm-sweep", "--general", "kqa,bogus"], "bogus", {}),
    ("helpers", ["dinm-sweep", "--judge", "oracle"], "oracle", {}),
    ("helpers", ["dinm-sweep", "--config", '{"learning_rate": 1}'], "learning_rate", {}),
    ("helpers", ["dinm-sweep", "--config", "lr"], "--config", {}),
    ("helpers", ["dinm-sweep", "--config", "lr=1,learning_rate=2"], "learning_rate", {}),
    ("helpers", ["dinm-sweep", "--grid", "none", "--no-vanilla"], "nothing to run", {}),
    ("helpers", ["dinm-sweep", "--data", "{tmp}/empty.json"], "empty.json", {}),
    ("helpers", ["dinm-sweep", "--out", "{tmp}/afile/s.json"], "--out", {}),
    ("helpers", ["dinm-sweep", "--log", "{tmp}"], "--log", {}),
    ("helpers", ["dinm-sweep", "--max-new-tokens", "0"], "--max-new-tokens", {}),
    ("helpers", ["dinm-sweep", "--model", "./no-such-model"], "no-such-model", {}),
    # --- --backend (an OpenAI-compatible generation server)
    ("helpers", ["safeedit-eval", "--data", "built", "--backend", "vllm:m"], "--backend", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--method", "dinm", "--backend", "openai:m"], "--backend", {}),
    ("helpers", ["safeedit-eval", "--data", "built", "--backend", "openai:m", "--backend-url",
                 "http://127.0.0.1:9/v1"], "http://127.0.0.1:9/v1", {}),
    ("helpers", ["gsm8k-eval", "--data", "test", "--backend", "openai:m", "--backend-url", "http://127.0.0.1:9/v1",
                 "--out", "{tmp}/r.json"], "http://127.0.0.1:9/v1", {}),
]


class ModelLoaded(BaseException):
    """Raised by the patched loaders: a probe loaded (or began to load) a model. Not an Exception, so that no
    error handling can turn it into an exit status."""


class ChildStarted(BaseException):
    """Raised by the patched subprocess.call: a command spawned a child before refusing its input."""


def _inputs(tmp: Path) -> None:
    (tmp / "truncated.json").write_text('[{"id": 1, "question": "x"', encoding="utf-8")
    (tmp / "latin1.json").write_bytes('[{"question": "caf\xe9"}]'.encode("latin-1"))
    (tmp / "empty.json").write_text("[]", encoding="utf-8")
    (tmp / "object.json").write_text('{"id": 1}', encoding="utf-8")
    from helpers.safeedit.data import load_safeedit

    record = dict(load_safeedit("built", split="test", limit=1)[0])
    del record["adversarial prompt"]
    (tmp / "nofield.json").write_text(json.dumps([record]), encoding="utf-8")
    (tmp / "afile").write_text("a file, not a folder", encoding="utf-8")
    (tmp / "review.jsonl").write_text('{"item": "a", "decision": "accept"}\nnot json\n{"item": "b"}\n',
                                      encoding="utf-8")
    (tmp / "empty.jsonl").write_text("", encoding="utf-8")
    (tmp / "latin1.jsonl").write_bytes('{"question": "caf\xe9?", "gold": "1"}\n'.encode("latin-1"))
    (tmp / "noquestion.jsonl").write_text(json.dumps({"answer": "#### 2"}) + "\n", encoding="utf-8")


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_models(monkeypatch):
    """Every way to a model raises :class:`ModelLoaded`; spawning a child raises :class:`ChildStarted`."""
    import transformers

    import helpers.common.models

    def refuse(*args, **kwargs):
        raise ModelLoaded(f"a model was loaded: {args} {kwargs}")

    for name in ("load_model", "load_tokenizer", "prepare_embedded_model"):
        monkeypatch.setattr(helpers.common.models, name, refuse)
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer,
                transformers.AutoModelForSequenceClassification):
        monkeypatch.setattr(cls, "from_pretrained", refuse)

    def no_child(*args, **kwargs):
        raise ChildStarted(f"a child process was started: {args}")

    monkeypatch.setattr(subprocess, "call", no_child)


def _ids(probe) -> str:
    command, argv, _, env = probe
    return " ".join(a.replace("{tmp}/", "") for a in argv) + "".join(f" [{k}]" for k in env)


@pytest.mark.parametrize("command, argv, culprit, env", PROBES, ids=[_ids(p) for p in PROBES])
def test_bad_input_gives_one_error_line_before_any_model_loads(no_models, tmp_path, monkeypatch, capsys, command,
                                                               argv, culprit, env):
    from helpers.cli import main

    _inputs(tmp_path)
    work = tmp_path / "cwd"  # the working folder: where default outputs would go
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HELPERS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("HELPERS_DEBUG", raising=False)
    port = _closed_port()
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(port=port))
    culprit = culprit.format(port=port)
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0].startswith("safeedit-") and "--out" not in args:
        args += ["--out", str(tmp_path / "out.json")]
    before = _snapshot(tmp_path)
    capsys.readouterr()
    status = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before, "nothing is written before the input is checked"


def test_the_matrix_covers_every_command():
    from helpers.cli import COMMANDS

    probed = {argv[0] for command, argv, _, _ in PROBES if command == "helpers"}
    assert set(COMMANDS) - probed <= {"info", "prepare-model"}  # they take no input that can be bad


def test_debug_shows_the_traceback(no_models, tmp_path, monkeypatch):
    from helpers.cli import main

    monkeypatch.setenv("HELPERS_DEBUG", "1")
    with pytest.raises(RuntimeError, match="--limit must be ≥ 1"):
        main(["safeedit-eval", "--data", "built", "--limit", "0", "--out", str(tmp_path / "out.json")])
    with pytest.raises(FileNotFoundError, match="nosuch.json"):
        main(["safeedit-eval", "--data", str(tmp_path / "nosuch.json"), "--out", str(tmp_path / "out.json")])


def test_bad_scale_leaves_help_and_info_working(no_models, monkeypatch, capsys):
    from helpers.cli import main

    monkeypatch.setenv("HELPERS_SCALE", "huge")
    assert main(["--help"]) == 0 and "safeedit-build" in capsys.readouterr().out
    for command in ("safeedit-build", "safeedit-eval", "llm2llm", "safeedit-table"):
        assert main([command, "--help"]) == 0
    assert main(["info"]) == 0
    assert "scale         invalid: HELPERS_SCALE must be one of" in capsys.readouterr().out


def _run(args, **env):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HELPERS_DEBUG": "", **env})


def test_entry_points_in_real_processes(tmp_path):
    """The real entry points: `python -m helpers` with a bad HELPERS_SCALE (help and info still work, a command
    says what is wrong) and `python -m helpers dinm-sweep` (its errors are one line too)."""
    scale = _run(["helpers", "info"], HELPERS_SCALE="huge")
    assert scale.returncode == 0 and "invalid: HELPERS_SCALE" in scale.stdout, scale.stderr[-2000:]
    sweep = _run(["helpers", "dinm-sweep", "--limit", "-1", "--out", str(tmp_path / "s.json")])
    assert sweep.returncode == 2 and sweep.stderr.strip() == "error: --limit must be ≥ 1, got -1", sweep.stderr
    old = _run(["helpers.dinm", "sweep", "--limit", "-1", "--out", str(tmp_path / "s.json")])  # the old spelling
    assert old.returncode == 2 and old.stderr.strip().splitlines() == [
        "note: `python -m helpers.dinm sweep` is deprecated; use `python -m helpers dinm-sweep`",
        "error: --limit must be ≥ 1, got -1"], old.stderr
    parse = _run(["helpers", "safeedit-eval", "--limit", "many"])
    assert parse.returncode == 2 and len(parse.stderr.strip().splitlines()) == 1, parse.stderr
    assert parse.stderr.startswith("error: argument --limit: invalid int value: 'many'")
    assert not list(tmp_path.iterdir())
