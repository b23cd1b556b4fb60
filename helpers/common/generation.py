"""Batched chat generation: chat template, left padding, greedy by default, seeded sampling optional.

Two in-process engines (``engine=`` or ``HELPERS_GENERATION``): ``"generate"`` — ``model.generate`` on padded
batches — and ``"continuous"`` — transformers' continuous batching (``model.generate_batch``: a paged KV cache,
requests join the running batch as others finish, no padding). ``"auto"`` (the default) takes continuous batching
on a GPU for calls of more than one batch, ``model.generate`` elsewhere.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

from tqdm.auto import tqdm

from .distributed import gather_shards, my_batches, on_main_only

Message = dict  # {"role": "user" | "system" | "assistant", "content": str}


def to_messages(prompt: str | Sequence[Message], system: str | None = None) -> list[Message]:
    """A prompt as chat messages: a plain string becomes one user turn (after an optional system turn)."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}] + messages
    return messages


def chat_prompt(tokenizer, prompt: str | Sequence[Message], system: str | None = None) -> str:
    """The text the model sees for ``prompt``, with the generation prompt appended.

    Tokenizers without a chat template get a plain ``User: … Assistant:`` format.
    """
    messages = to_messages(prompt, system)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def generate(
    model,
    tokenizer,
    prompts: Sequence[str | Sequence[Message]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    system: str | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    max_input_tokens: int | None = 1024,
    progress: bool = True,
    desc: str = "generating",
    use_chat_template: bool = True,
    stop: Sequence[str] | None = None,
    engine: str | None = None,
) -> list[str]:
    """Generate one reply per prompt, ``batch_size`` prompts at a time; returns decoded strings.

    Greedy by default (deterministic). With ``do_sample=True`` pass ``seed`` for reproducible sampling.
    Inputs longer than ``max_input_tokens`` keep their *last* tokens (where the question usually is).
    Prompts are sorted by length inside the call so batches waste little padding; the output keeps the
    input order. ``stop``: strings that end a reply (generation stops once one appears in the *new* text, see
    :class:`StopOnNewText`, and the reply is cut before the first of them, as OpenAI-compatible servers do).
    Inside :func:`helpers.common.distributed.sharded_work` of a multi-process launch, greedy batches are split
    over the ranks (the same batches as one process) and every rank gets every reply.

    ``model`` may be a :class:`helpers.common.backend.ServerBackend` (``tokenizer`` then unused): the prompts go to
    its OpenAI-compatible server as chat messages, with the same greedy/sampling settings.

    ``engine``: ``"generate"``, ``"continuous"`` or ``"auto"`` (see :func:`generation_engine`). Greedy replies of
    the two engines are the same texts (tested on the CPU in float32); the continuous engine applies ``stop`` to
    the finished reply (same cut, no early stop) and seeds sampling through its own generator.
    """
    if getattr(model, "is_server_backend", False):  # under sharded_work: rank 0's requests only
        replies = on_main_only(lambda: model.generate(
            prompts, max_new_tokens=max_new_tokens, system=system, do_sample=do_sample, temperature=temperature,
            top_p=top_p, seed=seed, use_chat_template=use_chat_template, progress=progress, desc=desc))
        return [cut_at_stop(r, stop).strip() for r in replies] if stop else replies
    import torch

    if isinstance(prompts, (str, dict)):
        raise TypeError("generate() takes a list of prompts; wrap a single prompt in a list")
    texts = [chat_prompt(tokenizer, p, system) if use_chat_template else str(p) for p in prompts]
    if not texts:
        return []
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs: list[str | None] = [None] * len(texts)
    device = next(model.parameters()).device
    if seed is not None:
        torch.manual_seed(seed)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    requested, engine = engine, generation_engine(model, engine, n_batches=len(batches))
    was_training = model.training
    model.eval()
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id)
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    split = not do_sample  # sampling's random stream runs through the batches in order: never split
    local: dict[int, str] = {}
    mine = my_batches(batches, split=split)  # all of them, or this rank's share inside sharded_work()
    if engine == "continuous":
        mine_flat = [i for batch in mine for i in batch]
        try:
            replies = continuous_replies(model, tokenizer, [texts[i] for i in mine_flat], gen_kwargs,
                                         max_input_tokens=max_input_tokens, seed=seed, progress=progress)
        except Exception as err:  # noqa: BLE001 - only where auto chose it: an untested GPU path must not stop a run
            if _engine_setting(requested)[0] != "auto":
                raise
            global _continuous_failed
            _continuous_failed = f"{type(err).__name__}: {err}"
            warnings.warn(f"continuous batching failed ({_continuous_failed}); using model.generate from now on")
        else:
            local.update({i: cut_at_stop(r, stop).strip() for i, r in zip(mine_flat, replies)})
            mine = []  # nothing left for the padded loop
    for batch in tqdm(mine, desc=desc, disable=not progress or len(mine) < 2, leave=False):
        tokenizer.truncation_side = "left"
        enc = tokenizer(
            [texts[i] for i in batch],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
            truncation=max_input_tokens is not None,
            max_length=max_input_tokens,
        ).to(device)
        stopping = {"stopping_criteria": [StopOnNewText(tokenizer, stop, enc["input_ids"].shape[1])]} if stop else {}
        with torch.no_grad():
            out = model.generate(**enc, **gen_kwargs, **stopping)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        for i, row in zip(batch, new_tokens):
            local[i] = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stop).strip()
    for i, text in gather_shards(local, split=split).items():
        outputs[i] = text
    if was_training:
        model.train()
    return outputs  # type: ignore[return-value]


ENGINES = ("auto", "generate", "continuous")


#: Why continuous batching failed in this process when ``auto`` chose it (``auto`` then keeps to model.generate).
_continuous_failed: str | None = None


def _engine_setting(engine: str | None) -> tuple[str, str]:
    """(name, where it came from): ``engine`` if given, else ``HELPERS_GENERATION``, else ``"auto"``."""
    if engine is not None:
        return engine.strip().lower() or "auto", "engine"
    return os.environ.get("HELPERS_GENERATION", "").strip().lower() or "auto", "HELPERS_GENERATION"


def _on_gpu(model) -> bool:
    return next(model.parameters()).device.type == "cuda"


def generation_engine(model, engine: str | None = None, *, n_batches: int = 2) -> str:
    """The in-process engine a :func:`generate` call uses: ``engine`` if given, else ``HELPERS_GENERATION``, else
    ``"auto"`` — continuous batching on a CUDA model that has ``generate_batch`` when the call spans more than one
    batch (where padding and waiting for the longest reply cost the most), ``model.generate`` otherwise. The GPU
    default has not been run on a GPU in this project (none was lent); on this CPU continuous batching measured
    1.04× padded batches for short GSM8K prompts but 0.42× for the SafeEdit harness's long inputs, hence not the
    CPU default. If it fails where ``auto`` chose it, :func:`generate` warns once and keeps to ``model.generate``."""
    name, where = _engine_setting(engine)
    if name not in ENGINES:
        raise ValueError(f"{where} must be one of {', '.join(ENGINES)} (got {name!r})")
    if name == "continuous" and not hasattr(model, "generate_batch"):
        raise ValueError("engine 'continuous' needs transformers' continuous batching (model.generate_batch)")
    if name != "auto":
        return name
    usable = _on_gpu(model) and hasattr(model, "generate_batch") and _continuous_failed is None
    return "continuous" if usable and n_batches > 1 else "generate"


def continuous_replies(model, tokenizer, texts: Sequence[str], gen_kwargs: dict, *, max_input_tokens: int | None,
                       seed: int | None = None, progress: bool = False) -> list[str]:
    """Decoded replies to ``texts`` (chat-formatted prompts) from ``model.generate_batch``, in input order.

    The model's own generation config (its end-of-turn tokens) with ``gen_kwargs`` on top, as ``model.generate``
    gets; each prompt keeps its last ``max_input_tokens`` tokens. ``generate_batch`` logs a failed request and
    leaves it out, so a missing or failed reply raises ``RuntimeError`` here instead of passing silently."""
    import copy

    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    tokenizer.truncation_side = "left"
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=max_input_tokens is not None,
                    max_length=max_input_tokens)["input_ids"]
    config = copy.deepcopy(model.generation_config)
    config.update(**gen_kwargs)
    cuda = _on_gpu(model)
    sizing = {} if cuda else {  # off a GPU: a cache just big enough (the default sizes it from GPU memory)
        "num_blocks": sum(-(-(len(row) + config.max_new_tokens) // 256) for row in ids) + 1, "max_batch_tokens": 512}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # warm-up pre-captures CUDA graphs: on a GPU only (on a CPU it costs ~11 s a call and captures nothing)
        out = model.generate_batch(ids, generation_config=config, progress_bar=progress, warmup=cuda,
                                   continuous_batching_config=ContinuousBatchingConfig(seed=seed, **sizing))
    results = list(out.values())
    if len(results) != len(ids) or any(r.error is not None or not r.is_finished() for r in results):
        bad = [r.request_id for r in results if r.error is not None]
        raise RuntimeError(f"continuous batching returned {len(results)} of {len(ids)} replies"
                           + (f" (failed: {', '.join(bad)})" if bad else ""))
    return [tokenizer.decode(r.generated_tokens, skip_special_tokens=True) for r in results]


class StopOnNewText:
    """A ``stopping_criteria`` entry for ``model.generate``: a row is done once one of ``stop`` occurs in the text
    generated after the prompt (``prompt_length`` tokens). transformers' own ``stop_strings`` also match across
    the prompt boundary — with a chat prompt ending in ``"assistant\n"``, the stop string ``"\nText:"`` fires
    on the first generated word ``Text:`` — so the course checks the new text only (decoded each step: cheap
    for replies of a few hundred tokens)."""

    def __init__(self, tokenizer, stop: Sequence[str], prompt_length: int):
        self.tokenizer, self.stop, self.prompt_length = tokenizer, [s for s in stop if s], prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool,
                            device=input_ids.device)


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """``text`` up to (not including) the earliest of the ``stop`` strings; all of it when none occurs."""
    cut = min((i for i in (text.find(s) for s in stop or () if s) if i >= 0), default=len(text))
    return text[:cut]


def chat(model, tokenizer, prompt: str, **kwargs) -> str:
    """One reply to one prompt (a convenience wrapper around :func:`generate`)."""
    kwargs.setdefault("progress", False)
    return generate(model, tokenizer, [prompt], **kwargs)[0]


def truncate(text: str, limit: int = 160) -> str:
    """Shorten ``text`` for display (unsafe generations are shown truncated by default)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def hidden(text: str, words: int = 2) -> str:
    """An unsafe generation as shown by default: its first few words and its length, the rest hidden."""
    head = " ".join(text.split()[:words])
    return f"{head} … [{len(text)} characters hidden]"


def show(text: str, unsafe: bool, *, reveal: bool = False, limit: int = 160) -> str:
    """What a notebook prints of a generation: truncated when safe (or when ``reveal``), else :func:`hidden`."""
    return truncate(text, limit) if reveal or not unsafe else hidden(text)
