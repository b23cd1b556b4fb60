"""MEND: the gradient decomposition is exact, the editor's output has the edited layer's shape, an edit moves
the model towards the safe generation, and restore() undoes it exactly."""
from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_causal_lm

from helpers.common.models import load_tokenizer, parameter_checksum
from helpers.detox.mend import MENDEditorNet, MENDMethod, RunningNorm, capture_factors
from helpers.safeedit.data import load_safeedit

pytestmark = pytest.mark.slow
TINY = {"max_prompt_tokens": 32, "max_target_tokens": 16, "max_loc_tokens": 24, "hidden": 16, "progress": False}


@pytest.fixture(scope="module")
def records(shared_data):
    return load_safeedit("three"), load_safeedit("sample", limit=2)


def test_running_norm_matches_batch_statistics():
    torch.manual_seed(0)
    norm = RunningNorm(4)
    a, b = torch.randn(10, 4) * 3 + 1, torch.randn(7, 4) * 2 - 1
    norm.train()
    norm(a)
    norm(b)
    both = torch.cat([a, b])
    assert torch.allclose(norm.mean.float(), both.mean(0), atol=1e-5)
    norm.eval()
    out = norm(both)
    assert torch.allclose(out, (both - both.mean(0)) / (both.std(0) + norm.eps), atol=1e-4)
    assert int(norm.count) == 17  # eval mode does not update


def test_editor_output_has_the_edited_layers_shape(embedded):
    model, _ = embedded
    method = MENDMethod(n_layers=2, **TINY)
    method.build_editor(model)
    assert method.module_names == ["model.layers.28.mlp.down_proj", "model.layers.29.mlp.down_proj"]
    weight = model.get_submodule(method.module_names[0]).weight
    out_dim, in_dim = weight.shape
    net = MENDEditorNet(in_dim, out_dim, hidden=8, n_layers=2)
    x, delta = torch.randn(5, in_dim), torch.randn(5, out_dim)
    # an untrained editor (W2 = 0, scale 1, shift 0, no statistics yet) passes the factors through
    net.eval()
    assert torch.equal(net(x, delta, 0)[0], x) and torch.equal(net(x, delta, 0)[1], delta)
    net.train()
    x_t, d_t = net(x, delta, layer=1)
    assert x_t.shape == x.shape and d_t.shape == delta.shape
    assert net.pseudo_gradient(x, delta, 1).shape == weight.shape
    factors = {n: (torch.randn(3, in_dim), torch.randn(3, out_dim)) for n in method.module_names}
    deltas = method.weight_deltas(model, factors)
    assert {k: tuple(v.shape) for k, v in deltas.items()} == {f"{n}.weight": tuple(weight.shape)
                                                              for n in method.module_names}


def test_factors_reproduce_the_fine_tuning_gradient(embedded):
    """With every position scored, Σ_t δ_t x_tᵀ is exactly autograd's gradient of the loss w.r.t. W."""
    model, tokenizer = embedded
    name = "model.layers.29.mlp.down_proj"
    ids = torch.tensor([tokenizer("Tea is a drink made from leaves.", add_special_tokens=False)["input_ids"]])
    labels = ids.clone()
    labels[0, 0] = -100
    factors, loss = capture_factors(model, [name], ids, labels)
    x, delta = factors[name]
    assert x.shape == (ids.shape[1] - 1, 1536) and delta.shape == (ids.shape[1] - 1, 576)
    weight = model.get_submodule(name).weight
    weight.requires_grad_(True)
    try:
        logits = model(input_ids=ids).logits
        ref_loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100)
        (grad,) = torch.autograd.grad(ref_loss, [weight])
    finally:
        weight.requires_grad_(False)
    assert abs(float(ref_loss.detach()) - loss) < 1e-5
    assert torch.allclose(delta.T @ x, grad, atol=1e-6, rtol=1e-3)


def test_edit_moves_towards_the_safe_generation_and_restores_exactly(records):
    tokenizer = load_tokenizer()
    model = tiny_causal_lm(tokenizer)  # a tiny random Llama: fast, and MEND is architecture-agnostic
    train, test = records
    checksum = parameter_checksum(model)
    method = MENDMethod(steps=2, n_layers=2, **TINY)
    with pytest.raises(RuntimeError, match="prepare"):
        method.edit(model, tokenizer, test[0])
    assert method.prepare(model, tokenizer, train) is model
    assert parameter_checksum(model) == checksum  # training the editor never changes the model
    assert len(method.history["loss"]) == 2 and all(v == v for v in method.history["loss"])
    names = [f"{n}.weight" for n in method.module_names]
    originals = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    info = method.edit(model, tokenizer, test[0])
    assert info["nll_after"] < info["nll_before"]
    assert info["delta_norm"] > 0
    changed = dict(model.named_parameters())
    assert not torch.equal(changed[names[0]], originals[names[0]])
    with pytest.raises(RuntimeError, match="twice"):
        method.edit(model, tokenizer, test[1])
    method.restore(model)
    assert parameter_checksum(model) == checksum
    assert all(torch.equal(dict(model.named_parameters())[n], originals[n]) for n in names)
