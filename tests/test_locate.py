"""Toxic-layer localisation (helpers.detox.locate): distances, argmax, module names, bad generations."""
from __future__ import annotations

import copy

import pytest
import torch

from helpers.detox.locate import (
    MODULE_NAMES,
    UnsupportedModelError,
    agreement,
    distances_from_hidden,
    locate_records,
    locate_toxic_layer,
    pair_inputs,
    record_distances,
    reused_first_layer,
    toxic_layer_from_distances,
    wv_module,
    wv_module_name,
)
from helpers.safeedit.data import SafeEditFormatError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one intra-op thread is faster, and much faster on a shared CPU (no spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(kind: str, vocab_size: int = 49152, layers: int = 4):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = AutoConfig.for_model("gpt2", n_embd=32, n_layer=layers, n_head=4, n_positions=512, vocab_size=vocab_size)
    else:
        extra = {"head_dim": 8} if kind.startswith("gemma") else {}
        cfg = AutoConfig.for_model(kind, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   vocab_size=vocab_size, **extra)
    return AutoModelForCausalLM.from_config(cfg).eval()


RECORD = {
    "id": 42, "unsafety category": "offensiveness", "adversarial prompt": "Please answer the question below.",
    "question": "q", "attack category": "a", "attack name": "n",
    "unsafe generation": "Sure, here is a rude reply full of insults and nothing else.",
    "safe generation": "I'm sorry, but I can't help with that request.",
    "knowledge constrain": {"prompt": "What is the capital of France?", "answer": "The capital of France is Paris."},
}


def constructed_hidden(n_layers=5, toxic=3, T=6, H=4):
    """Hidden states of a batch of two where layer ``toxic`` separates the rows most (in every variant)."""
    torch.manual_seed(1)
    base = torch.randn(1, T, H)
    states = [torch.cat([base, base])]  # embeddings
    for layer in range(n_layers):
        gap = 5.0 if layer == toxic else 0.5 * (layer + 1) / n_layers
        states.append(torch.cat([base, base + gap]))
    return tuple(states)


@pytest.mark.parametrize("variant", ["reference", "last", "mean"])
def test_argmax_on_constructed_example(variant):
    hidden = constructed_hidden(toxic=3)
    mask = torch.ones(2, 6, dtype=torch.long)
    d = distances_from_hidden(hidden, mask, variant)
    assert d.shape == (5,)
    assert toxic_layer_from_distances(d) == 3 == int(torch.argmax(d))
    # every variant measures a real distance: the reference one over all 6 positions × 4 dims
    expected = {"reference": 5.0 * (6 * 4) ** 0.5, "last": 5.0 * 2, "mean": 5.0 * 2}[variant]
    assert d[3].item() == pytest.approx(expected, rel=1e-5)


def test_variants_differ_on_padding():
    """The reference distance counts pad positions; last-token and mean-pooled ones ignore them."""
    T, H = 5, 3
    a = torch.zeros(2, T, H)
    layer0 = a.clone()
    layer0[0, :2] = 10.0  # row 0 is padded at positions 0-1 (left padding) and differs there only
    layer1 = a.clone()
    layer1[:, 2:] = torch.tensor([0.0, 1.0, 0.0])
    layer1[1, 2:] += 1.0  # a real difference of 1 at every real token
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    hidden = (a, layer0, layer1)
    assert toxic_layer_from_distances(distances_from_hidden(hidden, mask, "reference")) == 0
    assert toxic_layer_from_distances(distances_from_hidden(hidden, mask, "last")) == 1
    # row 1 has two more real positions (zeros in layer 1), so its mean differs; layer 0's pad rows are masked
    assert toxic_layer_from_distances(distances_from_hidden(hidden, mask, "mean")) == 1


def test_last_token_with_right_padding():
    T, H = 4, 2
    a = torch.zeros(2, T, H)
    layer = a.clone()
    layer[0, 1] = 3.0  # last real token of row 0 (right padding) is position 1
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    d = distances_from_hidden((a, layer), mask, "last")
    assert d[0].item() == pytest.approx(3.0 * 2 ** 0.5)


def test_bad_distance_inputs():
    with pytest.raises(ValueError, match="unknown variant"):
        distances_from_hidden(constructed_hidden(), torch.ones(2, 6), "max")
    with pytest.raises(ValueError):
        toxic_layer_from_distances([])


def test_module_names_one_place():
    assert set(MODULE_NAMES) >= {"llama", "mistral", "qwen2", "gemma", "gpt2"}
    llama, gpt2 = tiny_model("llama", vocab_size=100), tiny_model("gpt2", vocab_size=100)
    assert wv_module(llama, 2) is llama.model.layers[2].mlp.down_proj
    assert wv_module_name(llama, 2) == "model.layers.2.mlp.down_proj"
    assert wv_module(gpt2, 1) is gpt2.transformer.h[1].mlp.c_proj
    for kind in ("mistral", "qwen2", "gemma"):
        m = tiny_model(kind, vocab_size=100, layers=2)
        assert wv_module(m, 1) is m.model.layers[1].mlp.down_proj
    with pytest.raises(ValueError, match="layer must be"):
        wv_module(llama, 4)
    odd = copy.deepcopy(llama)
    odd.config.model_type = "falcon"
    with pytest.raises(UnsupportedModelError, match="falcon"):
        wv_module(odd, 0)


def test_locate_returns_argmax_of_model_distances(embedded):
    _, tokenizer = embedded
    model = tiny_model("llama")
    d = record_distances(model, tokenizer, RECORD, max_tokens=32)
    for variant in ("reference", "last", "mean"):
        assert d[variant].shape == (4,)
        assert locate_toxic_layer(model, tokenizer, RECORD, variant=variant, max_tokens=32) == int(d[variant].argmax())
    both = locate_records(model, tokenizer, [RECORD, {**RECORD, "id": 43}], max_tokens=32, progress=False)
    assert both["distances"]["reference"].shape == (2, 4)
    assert both["layers"]["mean"] == [int(d["mean"].argmax())] * 2


def test_locate_embedded_model_prompt_context(embedded):
    model, tokenizer = embedded
    d = record_distances(model, tokenizer, RECORD, context="prompt", max_tokens=16)
    assert d["reference"].shape == (model.config.num_hidden_layers,)
    assert torch.isfinite(d["reference"]).all() and (d["reference"] > 0).all()


def test_empty_and_long_generations(embedded):
    _, tokenizer = embedded
    with pytest.raises(SafeEditFormatError, match=r"record id 42: field 'unsafe generation' is empty"):
        pair_inputs(tokenizer, {**RECORD, "unsafe generation": "   "})
    with pytest.raises(SafeEditFormatError, match="'safe generation' is missing"):
        pair_inputs(tokenizer, {k: v for k, v in RECORD.items() if k != "safe generation"})
    long = {**RECORD, "unsafe generation": "word " * 2000}
    ids, mask, truncated = pair_inputs(tokenizer, long, max_tokens=40)
    assert truncated and ids.shape == (2, 40) and mask[1].sum() == 40
    ids, mask, truncated = pair_inputs(tokenizer, RECORD, max_tokens=40)
    assert not truncated and mask[0, -1] == 1  # left padding: the last column is real for both rows


def test_reference_reuse_and_agreement():
    assert reused_first_layer([7, 3, 9]) == [7, 7, 7]
    assert agreement([1, 2, 3], [1, 0, 3]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        agreement([1], [1, 2])
