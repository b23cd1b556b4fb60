"""The OpenAI-compatible generation backend (``--backend openai:MODEL``): requests, concurrency, errors, the
``gsm8k-eval`` wiring — against a fake server here, and against a real ``transformers serve`` (slow)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from local_server import LocalHTTPServer

from helpers.cli import main as cli_main
from helpers.common.backend import BackendError, ServerBackend, parse_backend
from helpers.common.generation import generate, to_messages
from helpers.common.io import read_jsonl


class FakeOpenAIServer(LocalHTTPServer):
    """A chat/completions server on 127.0.0.1 in the OpenAI schema. Replies ``reply(body)`` after ``delay``
    seconds and records every request and the most requests it ever had in flight at once."""

    def __init__(self, reply=None, delay: float = 0.0):
        self.requests, self.in_flight, self.max_in_flight = [], 0, 0
        self.lock = threading.Lock()
        fake = self
        reply = reply or (lambda body: "echo: " + body["messages"][-1]["content"])

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                time.sleep(delay)
                with fake.lock:
                    fake.in_flight -= 1
                if self.path.endswith("/chat/completions"):
                    choice = {"index": 0, "message": {"role": "assistant", "content": f"  {reply(body)}\n"},
                              "finish_reason": "stop"}
                else:
                    choice = {"index": 0, "text": f" raw: {body['prompt']}", "finish_reason": "stop"}
                self._send(200, {"id": "x", "object": "chat.completion", "choices": [choice]})

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_backend():
    assert parse_backend(None) is None and parse_backend("") is None and parse_backend("local") is None
    assert parse_backend("openai:Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert parse_backend("openai:/models/sft:v2") == "/models/sft:v2"
    for bad in ("vllm:x", "openai", "openai:", "Qwen/Qwen2.5-7B"):
        with pytest.raises(ValueError, match="--backend"):
            parse_backend(bad)


def test_requests_are_greedy_chat_messages_in_order(monkeypatch):
    monkeypatch.setenv("HELPERS_BACKEND_API_KEY", "sk-from-env")
    prompts = [f"question {i}" for i in range(6)] + [[{"role": "user", "content": "as messages"}]]
    with FakeOpenAIServer() as fake:
        backend = ServerBackend("tiny", base_url=fake.url + "/", concurrency=3)
        out = generate(backend, None, prompts, max_new_tokens=17, system="Be brief.", progress=False)
    assert out == [f"echo: question {i}" for i in range(6)] + ["echo: as messages"], "stripped, in input order"
    assert len(fake.requests) == 7
    by_content = {r["body"]["messages"][-1]["content"]: r for r in fake.requests}
    for prompt in prompts:
        request = by_content[prompt if isinstance(prompt, str) else prompt[-1]["content"]]
        assert request["path"] == "/v1/chat/completions"
        assert request["headers"]["Authorization"] == "Bearer sk-from-env"
        body = request["body"]
        assert body["messages"] == to_messages(prompt, "Be brief."), "the messages in-process generation renders"
        assert body["model"] == "tiny" and body["max_tokens"] == 17 and body["temperature"] == 0.0
        assert "seed" not in body and "top_p" not in body


def test_sampling_and_raw_prompts():
    with FakeOpenAIServer() as fake:
        backend = ServerBackend("tiny", base_url=fake.url)
        generate(backend, None, ["x"], do_sample=True, temperature=0.7, top_p=0.9, seed=5, progress=False)
        raw = generate(backend, None, ["plain text"], use_chat_template=False, progress=False)
    sampled = fake.requests[0]["body"]
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.7, 0.9, 5)
    assert fake.requests[1]["path"] == "/v1/completions" and fake.requests[1]["body"]["prompt"] == "plain text"
    assert raw == ["raw: plain text"]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_concurrency_bounds_requests_in_flight(concurrency):
    with FakeOpenAIServer(delay=0.15) as fake:
        backend = ServerBackend("tiny", base_url=fake.url, concurrency=concurrency)
        start = time.perf_counter()
        out = backend.generate([f"p{i}" for i in range(8)], progress=False)
        elapsed = time.perf_counter() - start
    assert out == [f"echo: p{i}" for i in range(8)]
    assert fake.max_in_flight == concurrency
    if concurrency == 4:
        assert elapsed < 8 * 0.15, "four in flight must beat one at a time"


def test_a_slow_reply_is_not_resent():
    with FakeOpenAIServer(delay=1.5) as fake:
        backend = ServerBackend("tiny", base_url=fake.url, timeout=0.3)
        with pytest.raises(BackendError, match="no reply within 0.3 s"):
            backend.generate(["slow"], progress=False)
        time.sleep(1.5)
    assert len(fake.requests) == 1, "the server is still generating it; a resend would only add load"


def test_unreachable_server_is_one_clear_error_naming_the_url(monkeypatch, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = ServerBackend("tiny", base_url=url, connect_timeout=2)
    start = time.perf_counter()
    with pytest.raises(BackendError, match=r"no OpenAI-compatible server answered at http://127\.0\.0\.1:\d+/v1"):
        backend.check()
    assert time.perf_counter() - start < 5
    monkeypatch.setenv("HELPERS_BACKEND_BASE_URL", url)
    assert cli_main(["gsm8k-eval", "--data", "test", "--backend", "openai:tiny", "--out", "unused.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no OpenAI-compatible server answered at " + url) and "\n" not in err


def test_gsm8k_eval_flag_errors_before_any_model_loads(monkeypatch, capsys, tmp_path):
    import helpers.common.models

    monkeypatch.setattr(helpers.common.models, "load_model", lambda *a, **k: pytest.fail("no model may load"))
    cases = [(["--backend", "vllm:tiny"], "--backend 'vllm:tiny': use 'openai:MODEL'"),
             (["--backend", "openai:tiny", "--model", "x/y"], "--model and --backend both name a model"),
             (["--concurrency", "8"], "--concurrency applies only with --backend"),
             (["--backend-url", "http://h:1/v1"], "--backend-url applies only with --backend"),
             (["--backend", "openai:tiny", "--concurrency", "0"], "--concurrency must be ≥ 1")]
    for extra, message in cases:
        assert cli_main(["gsm8k-eval", "--data", "test", "--out", str(tmp_path / "r.json"), *extra]) == 2
        assert message in capsys.readouterr().err


def test_gsm8k_eval_through_a_server(monkeypatch, tmp_path, capsys):
    import helpers.common.models

    monkeypatch.setattr(helpers.common.models, "load_model", lambda *a, **k: pytest.fail("no model may load"))
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"}) + "\n"
                            for i in range(5)))

    def solve(body):  # right for even i, wrong for odd i
        i = int(body["messages"][-1]["content"].split()[2])
        return f"{i} + {i} = {2 * i}\n#### {2 * i + i % 2}"

    out = tmp_path / "results.json"
    with FakeOpenAIServer(solve, delay=0.05) as fake:
        code = cli_main(["gsm8k-eval", "--data", str(data), "--limit", "4", "--backend", "openai:tiny",
                         "--backend-url", fake.url, "--concurrency", "2", "--max-new-tokens", "33",
                         "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["model"] == "openai:tiny" and result["backend"] == {"base_url": fake.url, "concurrency": 2}
    assert [i["prediction"] for i in result["instances"]] == ["0", "3", "4", "7"]
    assert result["correct"] == 2 and result["n"] == 4
    assert fake.max_in_flight == 2 and {r["body"]["max_tokens"] for r in fake.requests} == {33}
    from helpers.llm2llm.gsm8k import STUDENT_INSTRUCTION

    assert fake.requests[0]["body"]["messages"][-1]["content"].endswith(STUDENT_INSTRUCTION), "the student's prompt"


def test_safeedit_eval_through_a_server_for_methods_that_do_not_edit_weights(monkeypatch, tmp_path, capsys):
    import helpers.common.models
    from helpers.detox.self_reminder import SUFFIX, SYSTEM

    monkeypatch.setattr(helpers.common.models, "load_model", lambda *a, **k: pytest.fail("no model may load"))
    with FakeOpenAIServer(lambda body: "I'm sorry, but I cannot help with that.") as fake:
        for method in ("vanilla", "self-reminder"):
            out = tmp_path / f"{method}.json"
            code = cli_main(["safeedit-eval", "--data", "sample", "--limit", "2", "--method", method,
                             "--judge", "keyword", "--second-judge", "none", "--max-new-tokens", "21",
                             "--backend", "openai:tiny", "--backend-url", fake.url, "--concurrency", "3",
                             "--out", str(out)])
            assert code == 0, capsys.readouterr().err
            result = json.loads(out.read_text())
            assert result["settings"]["model"] == "openai:tiny" and result["n_records"] == 2
            assert result["settings"]["backend"]["concurrency"] == 3
            assert all(r == "I'm sorry, but I cannot help with that." for i in result["instances"]
                       for r in i["responses"].values())
    vanilla = [r["body"] for r in fake.requests if r["body"]["messages"][0]["role"] == "user"]
    reminded = [r["body"] for r in fake.requests if r["body"]["messages"][0]["role"] == "system"]
    assert vanilla and len(vanilla) == len(reminded), "the same inputs, once plain and once with the reminder"
    assert all(b["messages"][0]["content"] == SYSTEM and b["messages"][1]["content"].endswith(SUFFIX)
               for b in reminded)
    assert {b["max_tokens"] for b in vanilla + reminded} == {21}


@pytest.mark.parametrize("method", ["dinm", "sft", "mend"])
def test_safeedit_eval_refuses_a_backend_for_methods_that_edit_weights(method, monkeypatch, capsys, tmp_path):
    import helpers.common.models

    monkeypatch.setattr(helpers.common.models, "load_model", lambda *a, **k: pytest.fail("no model may load"))
    code = cli_main(["safeedit-eval", "--data", "sample", "--limit", "1", "--method", method,
                     "--backend", "openai:tiny", "--out", str(tmp_path / "r.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--backend: method '{method}' edits the model's weights" in err and "--method vanilla" in err


# ----------------------------------------------------------------------------------------------------
# Against a real `transformers serve` on localhost (slow: starts a server, generates on the CPU twice)
# ----------------------------------------------------------------------------------------------------
def _transformers_cli() -> str | None:
    beside = Path(sys.executable).parent / "transformers"
    return str(beside) if beside.exists() else shutil.which("transformers")


def _serving_installed() -> bool:
    import importlib.util

    return _transformers_cli() is not None and all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn"))


GSM8K_LIKE = [
    {"question": "Janet has 3 apples and buys 5 more. How many apples does she have?", "answer": "#### 8"},
    {"question": "A book costs $12. How much do 4 books cost?", "answer": "#### 48"},
    {"question": "Tom ran 6 miles on Monday and twice as far on Tuesday. How many miles did he run in total?",
     "answer": "#### 18"},
    {"question": "There are 20 birds and 7 fly away. How many are left?", "answer": "#### 13"},
]


@contextlib.contextmanager
def transformers_serve(folder: str, log_path: Path):
    """``transformers serve FOLDER`` on 127.0.0.1 (CPU, float32) until the block ends; yields its base URL."""
    port = free_port()
    log = open(log_path, "w")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    server = subprocess.Popen([_transformers_cli(), "serve", folder, "--device", "cpu", "--dtype", "float32",
                               "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                              env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            if server.poll() is not None:
                pytest.fail(f"transformers serve exited ({server.returncode}): {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"transformers serve was not ready in 240 s: {log_path.read_text()[-2000:]}")
            time.sleep(1)
        yield f"{url}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


needs_serving = pytest.mark.skipif(not _serving_installed(), reason="`transformers serve` is not installed "
                                                                   "(pip install 'course-helpers[serving]')")


@pytest.fixture(scope="module")
def served_embedded(tmp_path_factory):
    """One `transformers serve` of the embedded model for the tests below: ``(folder, base_url)``."""
    from helpers.common.models import prepare_embedded_model

    folder = str(prepare_embedded_model(verbose=False))
    with transformers_serve(folder, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield folder, url


@pytest.mark.slow
@needs_serving
def test_gsm8k_eval_via_transformers_serve_matches_in_process_greedy(embedded, served_embedded, tmp_path):
    from helpers.llm2llm.gsm8k import evaluate_gsm8k, read_gsm8k_file

    folder, url = served_embedded
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_LIKE))
    out = tmp_path / "served.json"
    assert cli_main(["gsm8k-eval", "--data", str(data), "--limit", "3", "--backend", f"openai:{folder}",
                     "--backend-url", url, "--concurrency", "3", "--max-new-tokens", "32",
                     "--no-progress", "--out", str(out)]) == 0
    served = json.loads(out.read_text())["instances"]
    model, tokenizer = embedded
    local = evaluate_gsm8k(model, tokenizer, read_gsm8k_file(data, 3), max_new_tokens=32, progress=False)["instances"]
    assert len(served) == 3
    assert [s["output"] for s in served] == [x["output"] for x in local], "token-for-token the same greedy replies"
    assert [s["prediction"] for s in served] == [x["prediction"] for x in local]
    assert any(s["prediction"] is not None for s in served), "32 tokens reach a '#### N' line in some reply"


@pytest.mark.slow
@needs_serving
def test_llm2llm_teacher_round_via_transformers_serve(served_embedded, shared_data, tmp_path, monkeypatch, capsys):
    """`llm2llm --teacher openai:MODEL` against a real local server: one round of a tiny TREC run, the embedded
    model as teacher over HTTP, replies bounded by the task's budget and cut at its stop strings."""
    folder, url = served_embedded
    out = tmp_path / "run"
    monkeypatch.setenv("HELPERS_TEACHER_BASE_URL", url)
    assert cli_main(["llm2llm", "--dataset", "trec", "--seed-size", "12", "--iterations", "1", "--test-size", "6",
                     "--epochs", "1", "--train-layers", "1", "--teacher", f"openai:{folder}",
                     "--teacher-max-new-tokens", "48", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    first = summary["iterations"][0]
    log = list(read_jsonl(out / "iteration_00" / "teacher_log.jsonl"))
    assert first["wrong_seed"] >= 1 and first["teacher_requests"] == first["wrong_seed"] == len(log)
    assert all(isinstance(row["prompt"], list) and row["prompt"][-1]["role"] == "user" for row in log), "few-shot turns"
    assert all(row["settings"]["max_new_tokens"] == 48 and "\n\n" not in row["reply"] for row in log)
    assert sum(len(row["reply"]) > len("Text: ") + 5 for row in log) >= len(log) / 2, "replies are not cut at once"
    assert first["teacher_acceptance_rate"] == round(first["teacher_replies_accepted"] / len(log), 4)
    assert first["teacher_replies_accepted"] + sum(first["rejected_replies"].values()) == len(log)
    assert first["teacher_label_agreement"]["n"] == first["new_examples"]
    assert summary["iterations"][1]["train_size"] == 12 + first["new_examples"]
    assert "teacher_accepted" in capsys.readouterr().out
