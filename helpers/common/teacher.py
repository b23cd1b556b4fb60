"""The teacher interface shared by SafeEdit construction (chapter 01) and LLM2LLM (chapters 07–08).

A *teacher* turns prompts into replies. Backends:

* :class:`HFTeacher` — a local Hugging Face model (default: the embedded SmolLM2-135M-Instruct), batched.
* :class:`OpenAICompatibleTeacher` — any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, …).
  Base URL and key come from the environment only: ``HELPERS_TEACHER_BASE_URL`` (or ``OPENAI_BASE_URL``,
  default ``https://api.openai.com/v1``) and ``HELPERS_TEACHER_API_KEY`` (or ``OPENAI_API_KEY``).
  Network errors, HTTP 429 and 5xx are retried with exponential backoff; an endpoint whose host cannot be
  reached at all fails at once, within ``connect_timeout`` (10 s), naming the URL
  (:meth:`OpenAICompatibleTeacher.check_connection`, which the commands call before anything loads).
* Task-specific offline teachers (e.g. the programmatic GSM8K teacher of chapter 07) subclass
  :class:`Teacher` and are registered in :data:`NAMED_TEACHERS`.

Every raw reply is appended to a JSONL log when ``log_path`` is set, so nothing a teacher wrote is lost.

:func:`get_teacher` maps a name to a teacher: ``None``/``"embedded"`` → the embedded model;
``"openai:MODEL"`` → an endpoint; a registered name → that teacher; anything else → a local folder or hub id.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from .io import append_jsonl

#: Registered task teachers: name → "module:attribute" (a class or factory taking keyword options).
NAMED_TEACHERS: dict[str, str] = {
    "offline-classification": "helpers.llm2llm.classification:OfflineClassificationTeacher",  # chapter 08 stand-in
    "programmatic-gsm8k": "helpers.llm2llm.gsm8k_teacher:ProgrammaticGSM8KTeacher",  # chapter 07, offline
}


class TeacherError(RuntimeError):
    """A teacher backend could not produce replies (after retries); the message says why."""


class Teacher:
    """Base class: ``complete(prompts) -> replies``, one reply string per prompt, logged.

    ``prompt_style``: what the teacher reads. ``"few-shot"`` (a language model): tasks that can send it chat
    turns with demonstrations from the seed set first (chapter 08; small models follow those much better than a
    long instruction); ``"instruction"``: one instruction per example (the offline stand-ins parse that).
    """

    name = "teacher"
    prompt_style = "few-shot"

    def __init__(self, log_path: str | os.PathLike | None = None):
        self.log_path = log_path

    def _complete(self, prompts: list, **settings) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def complete(self, prompts: Sequence, *, max_new_tokens: int = 256, temperature: float = 0.0,
                 seed: int | None = 0, system: str | None = None, tag: str = "",
                 stop: Sequence[str] | None = None) -> list[str]:
        """Replies to ``prompts`` (strings or chat-message lists). ``temperature=0`` means greedy.

        ``max_new_tokens`` bounds each reply; ``stop``: strings that end a reply. Every reply is cut before the
        first one here, so all backends agree; a local model also stops generating there (on the new text only),
        an HTTP endpoint only with ``send_stop=True`` (see :class:`OpenAICompatibleTeacher`).
        """
        from .generation import cut_at_stop

        prompts = list(prompts)
        settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, system=system)
        if stop:
            settings["stop"] = list(stop)
        backend_settings = dict(settings)
        if "stop" not in inspect.signature(self._complete).parameters:
            backend_settings.pop("stop", None)
        replies = self._complete(prompts, **backend_settings)
        if len(replies) != len(prompts):
            raise TeacherError(f"{self.name}: got {len(replies)} replies for {len(prompts)} prompts")
        if stop:
            replies = [cut_at_stop(reply, stop).strip() for reply in replies]
        if self.log_path is not None:
            for prompt, reply in zip(prompts, replies):
                append_jsonl(self.log_path, {"time": time.time(), "teacher": self.name, "tag": tag,
                                             "settings": settings, "prompt": prompt, "reply": reply})
        return replies

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class HFTeacher(Teacher):
    """A local Hugging Face chat model as teacher. Pass ``model_name`` or an already loaded ``model``/``tokenizer``."""

    def __init__(self, model_name: str | None = None, *, model=None, tokenizer=None, batch_size: int = 8,
                 log_path=None, device: str | None = None):
        super().__init__(log_path)
        if model is None:
            from .models import load_model

            model, tokenizer = load_model(model_name, device=device)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.name = model_name or getattr(model, "name_or_path_for_course", None) or "smollm2-135m-instruct"

    def _complete(self, prompts, *, max_new_tokens, temperature, seed, system, stop=None):
        from .generation import generate

        return generate(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                        batch_size=self.batch_size, system=system, do_sample=temperature > 0,
                        temperature=temperature if temperature > 0 else 1.0, seed=seed, desc=f"teacher {self.name}",
                        stop=stop)


class OpenAICompatibleTeacher(Teacher):
    """A chat-completions endpoint; the key is read from the environment, never from code or files."""

    def __init__(self, model: str, *, base_url: str | None = None, log_path=None, max_retries: int = 5,
                 backoff: float = 1.0, timeout: float = 120.0, concurrency: int = 4, connect_timeout: float = 10.0,
                 send_stop: bool = False):
        super().__init__(log_path)
        # Stop strings are applied to every reply here (Teacher.complete). Sending them to the server too saves
        # generation, but `transformers serve` (5.24) matches them across the end of the prompt: a few-shot
        # reply that starts with "Text:" after a prompt ending in a newline stops at once ("\nText:"), so they
        # are sent only on request (``send_stop=True``, e.g. for vLLM).
        self.send_stop = send_stop
        if not model.strip():
            raise TeacherError("openai:MODEL needs a model name after 'openai:' (e.g. openai:gpt-4o-mini)")
        self.name = f"openai:{model}"
        self.model = model
        self.base_url = (base_url or os.environ.get("HELPERS_TEACHER_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
                         or "https://api.openai.com/v1").rstrip("/")
        self.api_key = os.environ.get("HELPERS_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        self.max_retries, self.backoff, self.timeout, self.concurrency = max_retries, backoff, timeout, concurrency
        self.connect_timeout = connect_timeout
        self._reachable = False

    def check_connection(self) -> None:
        """Raise :class:`TeacherError` naming the URL when the endpoint's host (or the proxy in front of it) does
        not accept a connection within ``connect_timeout`` seconds in all (name lookup included); a reachable
        endpoint is checked once. Retries are for an endpoint that answered before, not for a wrong URL."""
        if self._reachable:
            return
        why = unreachable(self.base_url, self.connect_timeout)
        if why is not None:
            raise TeacherError(f"{self.name}: cannot reach {self.base_url} ({why}); check HELPERS_TEACHER_BASE_URL "
                               "(or OPENAI_BASE_URL) and the network")
        self._reachable = True

    def _request(self, messages: list[dict], max_new_tokens: int, temperature: float, seed, stop=None) -> str:
        body = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        if stop and self.send_stop:
            body["stop"] = list(stop)[:4]  # the OpenAI API takes at most four
        payload = post_json(f"{self.base_url}/chat/completions", body, api_key=self.api_key, timeout=self.timeout,
                            max_retries=self.max_retries, backoff=self.backoff, where=f"{self.name} at {self.base_url}",
                            key_hint="HELPERS_TEACHER_API_KEY")
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as err:
            raise TeacherError(f"{self.name} at {self.base_url}: unexpected reply format ({err!r})") from err

    def _complete(self, prompts, *, max_new_tokens, temperature, seed, system, stop=None):
        """Prompt ``i`` is sent with sampling seed ``seed + i``: the same prompt asked twice (``--per-wrong 2``)
        gets two different samples, and a rerun gets the same ones."""
        from .generation import to_messages

        self.check_connection()

        def one(i, prompt):
            return self._request(to_messages(prompt, system), max_new_tokens, temperature,
                                 None if seed is None else seed + i, stop)

        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(one, range(len(prompts)), prompts))


def unreachable(base_url: str, timeout: float = 10.0) -> str | None:
    """Why nothing accepts a connection for ``base_url`` within ``timeout`` seconds in all (name lookup included,
    through the proxy the environment names), or ``None`` when something does: the fail-fast check of every
    OpenAI-compatible client (teachers, :mod:`helpers.common.backend`), before retries that are for an endpoint that
    answered before, not for a wrong URL."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL, e.g. http://localhost:8000/v1"
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:  # a port that is not a number
        return str(err)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "//" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or host, proxy_parts.port or 80
    outcome: dict = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = True
        except OSError as err:
            outcome["error"] = err

    thread = threading.Thread(target=connect, daemon=True)  # bounds the name lookup too
    started = time.monotonic()
    thread.start()
    thread.join(timeout)
    if outcome.get("ok"):
        return None
    error = outcome.get("error")
    return f"{type(error).__name__}: {error}" if error is not None else \
        f"no connection within {time.monotonic() - started:.0f} s"


def check_teacher(teacher) -> None:
    """Refuse a teacher that cannot work, before any model loads: a name that is no teacher, model folder or hub
    id (:class:`helpers.common.models.ModelNotAvailableError`), or an OpenAI-compatible endpoint that cannot be reached
    (:class:`TeacherError` within about 10 s). A :class:`Teacher` object is checked when it can be
    (``check_connection``); loading a local model teacher is left to :func:`get_teacher`."""
    if isinstance(teacher, Teacher):
        check = getattr(teacher, "check_connection", None)
        if callable(check):
            check()
        return
    from .models import EMBEDDED_ALIASES, resolve_model_path

    if teacher is None or teacher in EMBEDDED_ALIASES or teacher in NAMED_TEACHERS:
        return
    if not isinstance(teacher, str) or not teacher.strip():
        raise TeacherError(f"--teacher {teacher!r}: not a teacher name")
    if teacher.startswith("openai:"):
        OpenAICompatibleTeacher(teacher.split(":", 1)[1]).check_connection()
        return
    resolve_model_path(teacher[3:] if teacher.startswith("hf:") else teacher)


def post_json(url: str, body: dict, *, api_key: str = "", timeout: float = 120.0, max_retries: int = 5,
              backoff: float = 1.0, where: str = "endpoint", key_hint: str = "the API key",
              error: type[Exception] = TeacherError, retry_timeouts: bool = True) -> dict:
    """POST ``body`` as JSON to ``url`` and return the decoded JSON reply: the HTTP client of every
    OpenAI-compatible backend (teachers, :mod:`helpers.common.backend`). Network errors, HTTP 408/409/429 and 5xx
    are retried with exponential backoff (``backoff · 2^attempt`` seconds); other HTTP errors and replies that
    are not JSON raise ``error`` at once, its message starting with ``where``. ``retry_timeouts=False``: a reply
    that does not come within ``timeout`` seconds raises at once (a generation server keeps working on a
    request its client gave up on, so resending it only adds load)."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode()
    last_error = None
    for attempt in range(max_retries + 1):
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            last_error = f"HTTP {err.code}"
            if err.code not in (408, 409, 429) and err.code < 500:
                detail = ""
                try:
                    detail = " ".join(err.read().decode("utf-8", "replace").split())[:300]
                except Exception:  # noqa: BLE001 - the status line is enough
                    pass
                raise error(f"{where}: HTTP {err.code} {err.reason} (check the model name and {key_hint})"
                            + (f": {detail}" if detail else "")) from err
        except json.JSONDecodeError as err:
            raise error(f"{where}: unexpected reply format ({err})") from err
        except TimeoutError as err:
            if not retry_timeouts:
                raise error(f"{where}: no reply within {timeout:g} s") from err
            last_error = f"{type(err).__name__}: {err}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            last_error = f"{type(err).__name__}: {err}"
        if attempt < max_retries:
            time.sleep(backoff * (2 ** attempt))
    raise error(f"{where}: gave up after {max_retries + 1} tries ({last_error})")


def get_teacher(name: str | None = None, *, log_path=None, model=None, tokenizer=None, **options) -> Teacher:
    """A teacher by name (see the module docstring). ``model``/``tokenizer`` reuse a loaded HF model."""
    if name is None or name in ("embedded", "smollm2-135m-instruct"):
        return HFTeacher(None, model=model, tokenizer=tokenizer, log_path=log_path, **options)
    if name.startswith("openai:"):
        return OpenAICompatibleTeacher(name.split(":", 1)[1], log_path=log_path, **options)
    if name in NAMED_TEACHERS:
        module_name, attr = NAMED_TEACHERS[name].split(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(log_path=log_path, **options)
    if name.startswith("hf:"):
        name = name[3:]
    return HFTeacher(name, log_path=log_path, **options)


class LazyTeacher:
    """A teacher (a name for :func:`get_teacher`, ``None``/``"embedded"``, or a :class:`Teacher`) created on
    first use (:meth:`get`), so that a rerun whose replies are all logged never loads a model."""

    def __init__(self, teacher, log_path: Path, model=None, tokenizer=None):
        from .models import EMBEDDED_NAME

        self._teacher, self.log_path = None, log_path
        self._model, self._tokenizer = model, tokenizer
        if teacher is None or isinstance(teacher, str):
            self._spec = None if teacher in (None, "embedded", EMBEDDED_NAME) else teacher
            self.name = EMBEDDED_NAME if self._spec is None else teacher
        else:
            self._spec, self.name, self._teacher = None, teacher.name, teacher
            if getattr(teacher, "log_path", None) is None:
                teacher.log_path = log_path

    def get(self):
        if self._teacher is None:
            if self._spec is None:  # the embedded model, reusing a loaded copy when one was passed
                self._teacher = get_teacher(None, log_path=self.log_path, model=self._model, tokenizer=self._tokenizer)
            else:
                self._teacher = get_teacher(self._spec, log_path=self.log_path)
        return self._teacher
