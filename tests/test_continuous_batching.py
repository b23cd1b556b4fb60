"""The continuous-batching engine (transformers' ``generate_batch``) against padded ``model.generate``: same greedy
texts, reproducible seeded sampling, the engine choice, and a lost request that cannot pass silently."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from helpers.common.generation import generate, generation_engine
from helpers.safeedit.harness import generate_bucketed

PROMPTS = ["What is the capital of France? Answer in one sentence.", "Say hello.",
           "Give me one tip for studying, in a short sentence.", "What is 2 + 3?", "Name a colour."]


def test_continuous_batching_gives_the_padded_batches_greedy_replies(embedded):
    """Five prompts of different lengths, batches of 2 for the padded engine (so rows wait for and are padded to
    others) and one stop string: the continuous engine, which neither pads nor stops early, gives the same texts."""
    model, tokenizer = embedded
    kwargs = dict(max_new_tokens=20, batch_size=2, progress=False)
    attention = model.config._attn_implementation
    padded = generate(model, tokenizer, PROMPTS, engine="generate", **kwargs)
    continuous = generate(model, tokenizer, PROMPTS, engine="continuous", **kwargs)
    assert continuous == padded and len(set(padded)) == len(PROMPTS)
    assert model.config._attn_implementation == attention  # paged attention only while generate_batch runs
    cut = generate(model, tokenizer, PROMPTS, engine="continuous", stop=["."], **kwargs)
    assert cut == generate(model, tokenizer, PROMPTS, engine="generate", stop=["."], **kwargs)
    assert all("." not in reply for reply in cut) and cut != continuous
    # the SafeEdit harness's length buckets collapse into one continuous call
    assert generate_bucketed(model, tokenizer, PROMPTS, max_new_tokens=20) == padded


def test_continuous_batching_seeds_its_sampling(embedded):
    model, tokenizer = embedded
    kwargs = dict(max_new_tokens=12, do_sample=True, progress=False, engine="continuous")
    a = generate(model, tokenizer, PROMPTS[:3], seed=3, **kwargs)
    assert a == generate(model, tokenizer, PROMPTS[:3], seed=3, **kwargs)
    assert a != generate(model, tokenizer, PROMPTS[:3], seed=4, **kwargs)


def test_engine_choice(embedded, monkeypatch):
    """auto: model.generate on this CPU; continuous batching on a CUDA model for more than one batch; the
    environment variable and the argument override it; a bad name is one clear sentence naming where it came from."""
    import torch

    model, _ = embedded
    monkeypatch.delenv("HELPERS_GENERATION", raising=False)
    assert generation_engine(model, n_batches=5) == "generate"

    class OnCuda:  # a model whose weights are on a GPU, as far as the engine choice looks
        generate_batch = None

        def parameters(self):
            yield SimpleNamespace(device=torch.device("cuda", 0))

    assert generation_engine(OnCuda(), n_batches=2) == "continuous"
    assert generation_engine(OnCuda(), n_batches=1) == "generate"
    monkeypatch.setenv("HELPERS_GENERATION", "continuous")
    assert generation_engine(model, n_batches=1) == "continuous"
    assert generation_engine(model, "generate") == "generate"
    monkeypatch.setenv("HELPERS_GENERATION", "vllm")
    with pytest.raises(ValueError, match="HELPERS_GENERATION must be one of auto, generate, continuous"):
        generation_engine(model)
    with pytest.raises(ValueError, match="engine must be one of"):
        generation_engine(model, "paged")


def test_a_request_lost_by_continuous_batching_raises(embedded, monkeypatch):
    """generate_batch logs a failed request and returns without it; the course's wrapper raises instead."""
    model, tokenizer = embedded
    real = type(model).generate_batch

    def loses_the_last(self, inputs, **kwargs):
        out = real(self, inputs, **kwargs)
        out.pop(list(out)[-1])
        return out

    monkeypatch.setattr(type(model), "generate_batch", loses_the_last)
    with pytest.raises(RuntimeError, match="returned 1 of 2 replies"):
        generate(model, tokenizer, PROMPTS[:2], max_new_tokens=4, progress=False, engine="continuous")


def test_auto_falls_back_to_model_generate_when_continuous_batching_fails(embedded, monkeypatch):
    """Where ``auto`` chose continuous batching (a GPU) and it fails, the call warns, answers with padded
    ``model.generate`` batches and ``auto`` keeps to them; an explicit ``engine="continuous"`` raises instead."""
    from helpers.common import generation

    model, tokenizer = embedded
    monkeypatch.delenv("HELPERS_GENERATION", raising=False)
    monkeypatch.setattr(generation, "_continuous_failed", None)
    monkeypatch.setattr(generation, "_on_gpu", lambda model: True)  # as auto sees a CUDA model
    assert generation_engine(model, n_batches=3) == "continuous"

    def broken(*args, **kwargs):
        raise RuntimeError("no paged attention kernel")

    monkeypatch.setattr(generation, "continuous_replies", broken)
    kwargs = dict(max_new_tokens=8, batch_size=2, progress=False)
    with pytest.warns(UserWarning, match="continuous batching failed .*no paged attention kernel"):
        replies = generate(model, tokenizer, PROMPTS, **kwargs)
    assert replies == generate(model, tokenizer, PROMPTS, engine="generate", **kwargs)
    assert generation_engine(model, n_batches=3) == "generate"
    with pytest.raises(RuntimeError, match="no paged attention kernel"):
        generate(model, tokenizer, PROMPTS, engine="continuous", **kwargs)
