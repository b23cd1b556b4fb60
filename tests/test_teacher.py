"""The foundation teacher interface: OpenAI-compatible endpoint (retries, logging) and the local HF teacher."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest
from local_server import LocalHTTPServer

from helpers.common.io import read_jsonl
from helpers.common.teacher import (
    NAMED_TEACHERS,
    HFTeacher,
    OpenAICompatibleTeacher,
    Teacher,
    TeacherError,
    get_teacher,
)


class FakeEndpoint(LocalHTTPServer):
    """A tiny chat-completions server on 127.0.0.1: replies with a script of (status, body) per request."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, payload = endpoint.script.pop(0) if endpoint.script else (200, None)
                if payload is None:  # default: echo the last user message
                    payload = {"choices": [{"message": {"content": "echo: " + body["messages"][-1]["content"]}}]}
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def reply(text):
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def test_openai_teacher_retries_a_503_then_logs_the_reply(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPERS_TEACHER_API_KEY", "sk-test-from-env")
    log = tmp_path / "teacher.jsonl"
    with FakeEndpoint([(503, {"error": "overloaded"}), (200, reply("Four."))]) as server:
        teacher = OpenAICompatibleTeacher("tiny-model", base_url=server.url, log_path=log, backoff=0.01)
        out = teacher.complete(["What is 2 + 2?"], max_new_tokens=7, temperature=0.0, seed=3,
                               system="Answer briefly.", tag="unit")
    assert out == ["Four."]
    assert len(server.requests) == 2, "the 503 must be retried exactly once"
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["Authorization"] == "Bearer sk-test-from-env"
    assert first["body"]["model"] == "tiny-model" and first["body"]["max_tokens"] == 7 and first["body"]["seed"] == 3
    assert first["body"]["messages"] == [{"role": "system", "content": "Answer briefly."},
                                         {"role": "user", "content": "What is 2 + 2?"}]
    logged = list(read_jsonl(log))
    assert len(logged) == 1
    assert logged[0]["reply"] == "Four." and logged[0]["prompt"] == "What is 2 + 2?"
    assert logged[0]["teacher"] == "openai:tiny-model" and logged[0]["tag"] == "unit"
    assert logged[0]["settings"]["max_new_tokens"] == 7


def test_openai_teacher_batches_concurrently_and_keeps_order(tmp_path):
    prompts = [f"prompt {i}" for i in range(7)]
    with FakeEndpoint([]) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, concurrency=3, log_path=tmp_path / "log.jsonl")
        out = teacher.complete(prompts, max_new_tokens=4)
    assert out == [f"echo: prompt {i}" for i in range(7)]
    assert [r["prompt"] for r in read_jsonl(tmp_path / "log.jsonl")] == prompts


def test_openai_teacher_errors_are_clear(tmp_path):
    with FakeEndpoint([(400, {"error": "bad model"})]) as server:
        teacher = OpenAICompatibleTeacher("nope", base_url=server.url, backoff=0.01)
        with pytest.raises(TeacherError, match="HTTP 400"):
            teacher.complete(["hi"])
        assert len(server.requests) == 1, "a 400 is not retried"
    with FakeEndpoint([(500, {})] * 3) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, backoff=0.01, max_retries=2)
        with pytest.raises(TeacherError, match="gave up after 3 tries"):
            teacher.complete(["hi"])
        assert len(server.requests) == 3
    with FakeEndpoint([(200, {"unexpected": True})]) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, backoff=0.01)
        with pytest.raises(TeacherError, match="unexpected reply format"):
            teacher.complete(["hi"])


def test_openai_teacher_reads_base_url_from_environment(monkeypatch):
    monkeypatch.setenv("HELPERS_TEACHER_BASE_URL", "http://127.0.0.1:9/v9/")
    teacher = get_teacher("openai:some-model")
    assert isinstance(teacher, OpenAICompatibleTeacher)
    assert teacher.base_url == "http://127.0.0.1:9/v9" and teacher.name == "openai:some-model"


class CountingTeacher(Teacher):
    name = "counting"

    def __init__(self, log_path=None, drop_one: bool = False):
        super().__init__(log_path)
        self.drop_one = drop_one

    def _complete(self, prompts, **settings):
        replies = [f"{len(p)} characters" for p in prompts]
        return replies[:-1] if self.drop_one else replies


def test_named_teachers_and_reply_count_check(tmp_path, monkeypatch):
    monkeypatch.setitem(NAMED_TEACHERS, "counting-test", "test_teacher:CountingTeacher")
    teacher = get_teacher("counting-test", log_path=tmp_path / "log.jsonl")
    assert isinstance(teacher, CountingTeacher)
    assert teacher.complete(["abc", "hello"]) == ["3 characters", "5 characters"]
    assert len(list(read_jsonl(tmp_path / "log.jsonl"))) == 2
    with pytest.raises(TeacherError, match="got 1 replies for 2 prompts"):
        CountingTeacher(drop_one=True).complete(["a", "b"])


def test_hf_teacher_is_greedy_deterministic_and_logged(embedded, tmp_path):
    model, tokenizer = embedded
    teacher = get_teacher(None, model=model, tokenizer=tokenizer, log_path=tmp_path / "hf.jsonl")
    assert isinstance(teacher, HFTeacher) and teacher.model is model, "a loaded model is reused, not reloaded"
    prompts = ["Name a colour.", "Say hello."]
    first = teacher.complete(prompts, max_new_tokens=8)
    second = teacher.complete(prompts, max_new_tokens=8)
    assert first == second and all(isinstance(r, str) and r for r in first)
    logged = list(read_jsonl(tmp_path / "hf.jsonl"))
    assert len(logged) == 4 and logged[0]["teacher"] == "smollm2-135m-instruct"
    assert logged[0]["settings"]["temperature"] == 0.0


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_fails_fast_naming_the_url(monkeypatch):
    import time

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    monkeypatch.setenv("HELPERS_TEACHER_BASE_URL", url)
    teacher = get_teacher("openai:some-model")  # the default retries and backoff (1 + 2 + 4 + 8 + 16 s)
    started = time.monotonic()
    with pytest.raises(TeacherError, match=f"cannot reach {url}"):
        teacher.complete(["hi"])
    assert time.monotonic() - started < 5


def test_a_host_that_never_answers_fails_within_the_connect_timeout(monkeypatch):
    import socket
    import time

    import helpers.common.teacher

    def hang(address, timeout=None, **kwargs):  # a host that never answers: a real connect times out at last
        time.sleep(30)
        raise TimeoutError("timed out")  # (returning None would raise in the leftover thread during a later test)

    monkeypatch.setattr(helpers.common.teacher.socket, "create_connection", hang)
    teacher = OpenAICompatibleTeacher("m", base_url="http://10.255.255.1:8000/v1", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TeacherError, match=r"cannot reach http://10\.255\.255\.1:8000/v1 \(no connection within"):
        teacher.check_connection()
    assert time.monotonic() - started < 3
    assert socket.create_connection is hang


def test_check_teacher_refuses_bad_names_before_anything_loads(monkeypatch):
    from helpers.common.models import ModelNotAvailableError
    from helpers.common.teacher import check_teacher

    check_teacher("programmatic-gsm8k")
    check_teacher(None)
    with pytest.raises(ModelNotAvailableError, match="no-such-teacher"):
        check_teacher("no-such-teacher")
    with pytest.raises(TeacherError, match="needs a model name"):
        check_teacher("openai:")
    with FakeEndpoint([]) as server:
        check_teacher(OpenAICompatibleTeacher("m", base_url=server.url))
