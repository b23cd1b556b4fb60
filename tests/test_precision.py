"""The hardware-aware default precision (helpers.common.models): bf16 autocast with float32 weights on a CPU
with native bf16, float32 elsewhere and with HELPERS_DTYPE=float32; training, DINM and label scoring under it
stay within a stated tolerance of float32 and keep float32 weights."""
from __future__ import annotations

import pytest
import torch
from test_locate import RECORD, one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)

from helpers.common import models
from helpers.common.models import compute_autocast, cpu_autocast_dtype, precision
from helpers.common.training import finetune
from helpers.detox.locate import wv_module

EXAMPLES = [{"prompt": f"What is {a} plus {b}?", "response": f"{a + b}"} for a, b in
            [(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (9, 1), (4, 4), (6, 3)]]
SHORT = dict(max_prompt_tokens=48, max_target_tokens=12, max_kc_tokens=12)


def native(monkeypatch, support):
    """Pretend the CPU reports ``support`` ("amx", "avx512_bf16" or None) in its flags."""
    monkeypatch.setattr(models, "cpu_bf16_support", lambda: support)


@pytest.mark.parametrize("support", ["amx", "avx512_bf16", None])
def test_auto_is_bf16_autocast_only_on_native_bf16_cpus(monkeypatch, support):
    monkeypatch.delenv("HELPERS_DTYPE", raising=False)
    native(monkeypatch, support)
    assert models.pick_dtype("cpu") == torch.float32  # weights stay float32 on a CPU
    with compute_autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") == (support is not None)
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert y.dtype == (torch.bfloat16 if support else torch.float32)
    assert cpu_autocast_dtype() == (torch.bfloat16 if support else None)
    assert precision("cpu") == (f"bf16 autocast on {support}" if support else "float32")
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the context


@pytest.mark.parametrize("value, expected", [("float32", "float32"), ("bfloat16", "bfloat16 weights"),
                                             ("auto", "bf16 autocast on amx")])
def test_helpers_dtype_overrides_the_cpu_default(monkeypatch, value, expected):
    native(monkeypatch, "amx")
    monkeypatch.setenv("HELPERS_DTYPE", value)
    assert precision("cpu") == expected
    with compute_autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") == (value == "auto")
    monkeypatch.setenv("HELPERS_DTYPE", "half")
    with pytest.raises(ValueError, match="HELPERS_DTYPE='half'"):
        cpu_autocast_dtype()


def test_hardware_line_names_the_precision(monkeypatch):
    from helpers.common.results import hardware

    native(monkeypatch, "amx")
    monkeypatch.delenv("HELPERS_DTYPE", raising=False)
    assert hardware().endswith("; bf16 autocast on amx")
    monkeypatch.setenv("HELPERS_DTYPE", "float32")
    assert hardware().endswith("; float32")


def _finetune(embedded, monkeypatch, setting):
    monkeypatch.setenv("HELPERS_DTYPE", setting)
    native(monkeypatch, "amx")
    model, tokenizer = embedded
    trained = finetune(model, EXAMPLES, tokenizer=tokenizer, epochs=1, batch_size=4, lr=1e-4, train_layers=2,
                       seed=0, progress=False)
    return trained


def test_finetuning_under_bf16_autocast_stays_near_float32(embedded, monkeypatch):
    """The same two updates in float32 and under bf16 autocast: the losses differ (autocast really ran) but
    by less than 5 % relative (measured 2.0 %: the replies are one or two tokens, so bf16 rounding shows), and
    the trained weights are float32 either way."""
    fp32 = _finetune(embedded, monkeypatch, "float32")
    mixed = _finetune(embedded, monkeypatch, "auto")
    a, b = fp32.finetune_history["loss"], mixed.finetune_history["loss"]
    assert fp32.finetune_history["precision"] == "float32"
    assert mixed.finetune_history["precision"] == "bf16 autocast on amx"
    assert len(a) == len(b) == 2 and a != b
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b)) < 0.05
    assert all(p.dtype == torch.float32 for p in mixed.parameters())


def _edited_and_restored(monkeypatch, setting, edit):
    """A tiny llama under HELPERS_DTYPE=``setting`` on a (pretended) AMX CPU: ``edit(model)`` edits and restores
    it; the weights must come back exactly. Returns what ``edit`` returns."""
    monkeypatch.setenv("HELPERS_DTYPE", setting)
    native(monkeypatch, "amx")
    torch.manual_seed(0)
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = edit(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # exact restore
    return result


def _dinm_losses(tokenizer, monkeypatch, setting):
    from helpers.detox.dinm import DINMSession

    def edit(model):
        session = DINMSession(model, tokenizer, RECORD, 2, **SHORT)
        history = session.run(steps=4, lr=1e-2, kl_weight=1.0)
        assert session.param.dtype == torch.float32 and session.delta_norm() > 0
        session.restore()
        return history, session.precision
    return _edited_and_restored(monkeypatch, setting, edit)


def test_dinm_under_bf16_autocast_stays_near_float32_and_restores_exactly(embedded, monkeypatch):
    _, tokenizer = embedded
    fp32, p32 = _dinm_losses(tokenizer, monkeypatch, "float32")
    mixed, pmix = _dinm_losses(tokenizer, monkeypatch, "auto")
    assert (p32, pmix) == ("float32", "bf16 autocast on amx")
    assert fp32["loss"] != mixed["loss"]
    assert max(abs(x - y) / abs(x) for x, y in zip(fp32["nll"], mixed["nll"])) < 0.02
    assert mixed["loss"][-1] < mixed["loss"][0]  # the edit still lowers the loss


def test_label_scoring_under_bf16_autocast_keeps_the_labels(embedded, monkeypatch):
    from helpers.llm2llm.label_scoring import score_labels

    model, tokenizer = embedded
    native(monkeypatch, "amx")
    prompts = ["Is this review positive or negative? 'A wonderful, warm film.'",
               "Is this review positive or negative? 'Dull and far too long.'",
               "Is this review positive or negative? 'I loved every minute.'",
               "Is this review positive or negative? 'A waste of an evening.'"]
    monkeypatch.setenv("HELPERS_DTYPE", "float32")
    fp32 = score_labels(model, tokenizer, prompts, ["positive", "negative"], progress=False)
    monkeypatch.setenv("HELPERS_DTYPE", "auto")
    mixed = score_labels(model, tokenizer, prompts, ["positive", "negative"], progress=False)
    assert fp32 != mixed
    assert [max((0, 1), key=r.__getitem__) for r in fp32] == [max((0, 1), key=r.__getitem__) for r in mixed]
    assert max(abs(x - y) for r, s in zip(fp32, mixed) for x, y in zip(r, s)) < 0.5


def test_trainer_engine_runs_under_the_same_autocast_as_the_loop(monkeypatch):
    """Under bf16 autocast the Trainer engine (accelerate's CPU bf16) and the plain loop give the same losses,
    and both differ from float32: the Trainer really autocasts."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import tiny_causal_lm

    from helpers.common.models import load_tokenizer

    tokenizer = load_tokenizer()
    model = tiny_causal_lm(tokenizer)
    native(monkeypatch, "amx")
    losses = {}
    for setting in ("float32", "auto"):
        monkeypatch.setenv("HELPERS_DTYPE", setting)
        for engine in ("loop", "trainer"):
            trained = finetune(model, EXAMPLES, tokenizer=tokenizer, epochs=1, lr=5e-3, batch_size=4, seed=1,
                               progress=False, engine=engine)
            losses[setting, engine] = trained.finetune_history["loss"]
    assert losses["auto", "trainer"] == pytest.approx(losses["auto", "loop"], abs=1e-5)
    assert losses["float32", "trainer"] == pytest.approx(losses["float32", "loop"], abs=1e-5)
    assert losses["auto", "loop"] != losses["float32", "loop"]


def test_dinm_on_a_bf16_model_trains_a_float32_master_and_restores_exactly(embedded, monkeypatch):
    """A model held in bf16 (a GPU, or HELPERS_DTYPE=bfloat16): DINM trains a float32 master copy of W_V
    under autocast and writes it back rounded once. The losses stay within 5 % of the float32 edit's (bf16
    weights everywhere else), the edit survives the rounding (W_V changed, by about as much as in float32),
    the model keeps only bf16 weights, and restore gives back every bf16 weight bit for bit."""
    from helpers.detox.dinm import DINMSession

    _, tokenizer = embedded
    monkeypatch.setenv("HELPERS_DTYPE", "float32")
    torch.manual_seed(0)
    model = tiny_model("llama")
    reference = DINMSession(model, tokenizer, RECORD, 2, **SHORT)
    fp32 = reference.run(steps=4, lr=1e-2, kl_weight=1.0)
    fp32_delta = reference.delta_norm()
    reference.restore()

    model = model.to(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    session = DINMSession(model, tokenizer, RECORD, 2, **SHORT)
    assert session.precision == "bfloat16 weights, float32 W_V"
    history = session.run(steps=4, lr=1e-2, kl_weight=1.0)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert session.param is model.model.layers[2].mlp.down_proj.weight  # the module holds W_V again
    assert 0.5 < session.delta_norm() / fp32_delta < 2.0
    assert history["loss"] != fp32["loss"]
    assert max(abs(x - y) / abs(x) for x, y in zip(fp32["nll"], history["nll"])) < 0.05
    assert history["nll_after"] < history["nll"][0]
    session.restore()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_dinm_casts_the_frozen_weights_once_with_the_same_losses(embedded, monkeypatch):
    """Under CPU bf16 autocast the frozen weights above the edit are cast to bf16 once per run instead of in
    every call: the per-step losses equal autocast's own casting (same rounding), the model holds its own
    float32 weight objects again afterwards, and with float32 nothing is cast at all."""
    from helpers.detox.dinm import DINMSession

    _, tokenizer = embedded
    native(monkeypatch, "amx")
    monkeypatch.setenv("HELPERS_DTYPE", "auto")
    torch.manual_seed(0)
    model = tiny_model("llama")
    weights = [p for p in model.parameters()]
    runs = {}
    for cast_once in (True, False):
        session = DINMSession(model, tokenizer, RECORD, 1, cast_once=cast_once, **SHORT)
        assert session.cast_once == cast_once
        seen = []
        hook = model.model.layers[2].mlp.up_proj.register_forward_pre_hook(
            lambda m, a: seen.append(m.weight.dtype))
        runs[cast_once] = session.run(steps=3, lr=1e-2, kl_weight=1.0)
        hook.remove()
        assert set(seen) == {torch.bfloat16 if cast_once else torch.float32}
        session.restore()
    assert all(a is b for a, b in zip(model.parameters(), weights)) and all(p.dtype == torch.float32 for p in weights)
    for key in ("loss", "nll", "kl"):
        assert runs[True][key] == pytest.approx(runs[False][key], rel=1e-5)
    monkeypatch.setenv("HELPERS_DTYPE", "float32")
    assert not DINMSession(model, tokenizer, RECORD, 1, **SHORT).cast_once


def _ft_l_run(tokenizer, monkeypatch, setting):
    from helpers.detox.ft_l import FTLMethod

    def edit(model):
        method = FTLMethod(layer=2, steps=4, lr=1e-2, norm_constraint=None, max_prompt_tokens=48,
                           max_target_tokens=12)
        info = method.edit(model, tokenizer, RECORD)
        assert wv_module(model, 2).weight.dtype == torch.float32 and info["delta_norm"] > 0
        method.restore(model)
        return info
    return _edited_and_restored(monkeypatch, setting, edit)


def test_ft_l_under_bf16_autocast_stays_near_float32_and_restores_exactly(embedded, monkeypatch):
    _, tokenizer = embedded
    fp32, mixed = (_ft_l_run(tokenizer, monkeypatch, s) for s in ("float32", "auto"))
    assert (fp32["precision"], mixed["precision"]) == ("float32", "bf16 autocast on amx")
    assert fp32["loss"] != mixed["loss"]                                   # autocast is really on
    assert max(abs(x - y) / abs(x) for x, y in zip(fp32["loss"], mixed["loss"])) < 0.02
    assert mixed["loss_after"] < mixed["loss"][0]                          # the edit still lowers the loss
