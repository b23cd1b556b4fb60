"""Where evaluation replies come from: in-process ``model.generate`` (the default) or an OpenAI-compatible
server (``--backend openai:MODEL``: vLLM, SGLang, ``transformers serve``, …).

A :class:`ServerBackend` stands in for the model wherever :func:`helpers.common.generation.generate` is called
(``gsm8k-eval``, ``safeedit-eval --method vanilla|self-reminder``): ``generate(backend, None, prompts, …)``
sends one request per prompt, ``concurrency`` at a time from a thread pool, and keeps the input order. The
server batches concurrent requests itself (continuous batching in vLLM and SGLang, and in ``transformers
serve --continuous-batching``; plain ``transformers serve`` runs one request at a time). A reply may take up
to ``timeout`` seconds (30 min: a request queued behind others waits for them); one that takes longer is
not resent, since the server would still be working on it.

**Messages, not rendered prompts.** Each prompt goes to ``/chat/completions`` as the same chat messages that
in-process generation renders (:func:`helpers.common.generation.to_messages`: an optional system turn, then the
user turn). The server applies the model's own chat template with the generation prompt, i.e. the same
text :func:`helpers.common.generation.chat_prompt` builds, so greedy replies (``temperature: 0``) match
in-process greedy decoding token for token when the server runs the same weights in the same precision
(tested against ``transformers serve`` on CPU in float32: ``tests/test_backend.py``). The completions
endpoint with a pre-rendered prompt looks more exact but is not: servers tokenize a raw prompt *with*
special tokens (a second BOS before the template's own for Llama-style tokenizers), whereas in-process
generation tokenizes the rendered template without them; and a client-side template would need the
tokenizer here. ``use_chat_template=False`` (a raw prompt, no template) does use ``/completions``.

Differences that remain: the server does not apply ``max_input_tokens`` (in-process generation keeps the
last 1,024 tokens of a longer input; a server sends it whole or rejects it beyond its context), and a
server in bfloat16 or with batch-dependent kernels may pick a different token where two are nearly tied.

Base URL: ``base_url``, else ``HELPERS_BACKEND_BASE_URL``, else ``http://localhost:8000/v1``. API key from
the environment only: ``HELPERS_BACKEND_API_KEY`` (or ``OPENAI_API_KEY``); local servers need none.
The HTTP client (retries, backoff) is the teacher's, :func:`helpers.common.teacher.post_json`.
"""
from __future__ import annotations

import copy
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from .teacher import post_json, unreachable

DEFAULT_BASE_URL = "http://localhost:8000/v1"
BACKEND_CHOICES = "'openai:MODEL' (an OpenAI-compatible server: vLLM, SGLang, transformers serve)"


class BackendError(RuntimeError):
    """The generation server could not be reached or answered badly; the message names the URL."""


def parse_backend(spec: str | None) -> str | None:
    """``None``/``""``/``"local"`` → ``None`` (in-process generation); ``"openai:MODEL"`` → ``"MODEL"``;
    anything else → ``ValueError`` (checked before any model loads)."""
    if spec is None or not str(spec).strip() or str(spec).strip() == "local":
        return None
    kind, sep, model = str(spec).strip().partition(":")
    if kind != "openai" or not sep:
        raise ValueError(f"--backend {spec!r}: use {BACKEND_CHOICES}, or leave it out for in-process generation")
    if not model.strip():
        raise ValueError(f"--backend {spec!r}: name the model the server serves, e.g. openai:Qwen/Qwen2.5-7B-Instruct "
                         "or openai:/path/to/model (as the server's /v1/models lists it)")
    return model.strip()


def base_url_from(base_url: str | None = None) -> str:
    return (base_url or os.environ.get("HELPERS_BACKEND_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


class ServerBackend:
    """An OpenAI-compatible generation server used in place of a local model (see the module docstring)."""

    is_server_backend = True  # what helpers.common.generation.generate looks for

    def __init__(self, model: str, *, base_url: str | None = None, concurrency: int = 4,
                 connect_timeout: float = 10.0, timeout: float = 1800.0, max_retries: int = 2, backoff: float = 1.0):
        if int(concurrency) < 1:
            raise ValueError(f"--concurrency must be ≥ 1, got {concurrency}")
        self.model = model
        self.name = f"openai:{model}"
        self.name_or_path_for_course = self.name  # where results files record the model
        self.base_url = base_url_from(base_url)
        self.api_key = os.environ.get("HELPERS_BACKEND_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        self.concurrency, self.connect_timeout, self.timeout = int(concurrency), connect_timeout, timeout
        self.max_retries, self.backoff = max_retries, backoff
        self.requests = 0

    def __repr__(self) -> str:
        return f"ServerBackend({self.model!r}, base_url={self.base_url!r}, concurrency={self.concurrency})"

    def with_model(self, model: str) -> "ServerBackend":
        """The same server and settings, asking for another model (e.g. a student folder by its path)."""
        other = copy.copy(self)
        other.model, other.name = model, f"openai:{model}"
        other.name_or_path_for_course = other.name
        return other

    def check(self) -> None:
        """Fail fast (within ``connect_timeout``) with an ``error:`` naming the URL when no server answers."""
        why = unreachable(self.base_url, self.connect_timeout)
        if why is not None:
            raise self._no_server(why)
        url = f"{self.base_url}/models"  # something listens: is it a server that takes our key?
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})
        try:
            with urllib.request.urlopen(request, timeout=self.connect_timeout):
                return
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise BackendError(f"the server at {self.base_url} refused the request (HTTP {err.code}); "
                                   "set HELPERS_BACKEND_API_KEY") from err
            return  # it answered: some servers have no /models
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            raise self._no_server(getattr(err, "reason", err)) from err

    def _no_server(self, why) -> BackendError:
        return BackendError(
            f"no OpenAI-compatible server answered at {self.base_url} within {self.connect_timeout:g} s ({why}); "
            "start one (e.g. `transformers serve MODEL_FOLDER --port 8000`) or pass --backend-url / set "
            "HELPERS_BACKEND_BASE_URL")

    def _post(self, endpoint: str, body: dict) -> dict:
        self.requests += 1
        return post_json(f"{self.base_url}/{endpoint}", body, api_key=self.api_key, timeout=self.timeout,
                         max_retries=self.max_retries, backoff=self.backoff, error=BackendError,
                         retry_timeouts=False, where=f"{self.name} at {self.base_url}",
                         key_hint="HELPERS_BACKEND_API_KEY")

    def complete_one(self, prompt, *, max_new_tokens: int = 64, system: str | None = None, do_sample: bool = False,
                     temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
                     use_chat_template: bool = True) -> str:
        """One reply (stripped, as in-process generation returns it). Greedy unless ``do_sample``."""
        from .generation import to_messages

        body: dict = {"model": self.model, "max_tokens": int(max_new_tokens)}
        if do_sample:
            body.update(temperature=float(temperature), top_p=float(top_p))
            if seed is not None:
                body["seed"] = int(seed)
        else:
            body["temperature"] = 0.0
        if use_chat_template:
            body["messages"] = to_messages(prompt, system)
            payload = self._post("chat/completions", body)
        else:
            body["prompt"] = str(prompt)
            payload = self._post("completions", body)
        try:
            choice = payload["choices"][0]
            text = choice["message"]["content"] if use_chat_template else choice["text"]
        except (KeyError, IndexError, TypeError) as err:
            raise BackendError(f"{self.name} at {self.base_url}: unexpected reply format ({err!r})") from err
        return (text or "").strip()

    def generate(self, prompts: Sequence, *, max_new_tokens: int = 64, system: str | None = None,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
                 use_chat_template: bool = True, progress: bool = True, desc: str = "generating",
                 **_in_process_only) -> list[str]:
        """Replies to ``prompts`` in input order, ``concurrency`` requests in flight. Keyword arguments of
        in-process generation that a server decides itself (``batch_size``, ``max_input_tokens``) are ignored."""
        from tqdm.auto import tqdm

        if isinstance(prompts, (str, dict)):
            raise TypeError("generate() takes a list of prompts; wrap a single prompt in a list")
        prompts = list(prompts)
        if not prompts:
            return []

        def one(prompt):
            return self.complete_one(prompt, max_new_tokens=max_new_tokens, system=system, do_sample=do_sample,
                                     temperature=temperature, top_p=top_p, seed=seed,
                                     use_chat_template=use_chat_template)

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(tqdm(pool.map(one, prompts), total=len(prompts), desc=desc, leave=False,
                             disable=not progress or len(prompts) < 2))


def backend_from_args(args) -> ServerBackend | None:
    """The backend a command's ``--backend``/``--backend-url``/``--concurrency`` flags ask for (``None``:
    in-process), validated and its server checked before any model loads."""
    model = parse_backend(getattr(args, "backend", None))
    if model is None:
        for flag, value, default in (("--backend-url", getattr(args, "backend_url", None), None),
                                     ("--concurrency", getattr(args, "concurrency", None), 4)):
            if value not in (None, default):
                raise ValueError(f"{flag} applies only with --backend openai:MODEL")
        return None
    backend = ServerBackend(model, base_url=args.backend_url, concurrency=args.concurrency)
    backend.check()
    return backend


def add_backend_arguments(parser, help: str | None = None) -> None:
    """``--backend``, ``--backend-url`` and ``--concurrency``, shared by the evaluation commands."""
    parser.add_argument("--backend", default=None, metavar="openai:MODEL",
                        help=help or "generate through an OpenAI-compatible server (vLLM, SGLang, transformers "
                                     "serve) instead of in-process model.generate (the default)")
    parser.add_argument("--backend-url", default=None,
                        help=f"the server's base URL (default: HELPERS_BACKEND_BASE_URL, else {DEFAULT_BASE_URL}); "
                             "API key from HELPERS_BACKEND_API_KEY")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight with --backend (default 4)")
