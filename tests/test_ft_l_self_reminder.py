"""FT-L (helpers.detox.ft_l) and Self-Reminder (helpers.detox.self_reminder): what they change, restore, constrain, send."""
from __future__ import annotations

import pytest
import torch
from test_dinm import EVAL_RECORD
from test_locate import RECORD, one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)

from helpers.common.generation import chat_prompt
from helpers.common.models import parameter_checksum
from helpers.detox.ft_l import FTLMethod, reference_layer
from helpers.detox.locate import wv_module, wv_module_name
from helpers.detox.methods import get_method
from helpers.detox.self_reminder import SUFFIX, SYSTEM, SelfReminderMethod
from helpers.safeedit.harness import evaluate_safeedit
from helpers.safeedit.judge import get_judge

SHORT = dict(max_prompt_tokens=48, max_target_tokens=12)


def within_box(edited, original, eps: float) -> bool:
    """Every element within ±eps of the original, up to float32 rounding of ``original ± eps``."""
    slack = 4 * torch.finfo(torch.float32).eps * original.abs()
    return bool(((edited - original).abs() <= eps + slack).all())


def test_reference_layer_keeps_the_relative_depth():
    assert [reference_layer(n) for n in (32, 30, 24, 4, 1)] == [21, 20, 16, 2, 0]


def test_ft_l_changes_only_the_matrix_within_the_constraint_and_restores(embedded):
    _, tokenizer = embedded
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checksum = parameter_checksum(model)
    flags = [p.requires_grad for p in model.parameters()]
    eps = 1e-3
    method = FTLMethod(steps=4, lr=1e-2, norm_constraint=eps, **SHORT)
    info = method.edit(model, tokenizer, RECORD)
    target = wv_module_name(model, 2) + ".weight"
    assert info["edited_layer"] == 2 and info["edited_module"] + ".weight" == target
    assert [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])] == [target]
    delta = (model.state_dict()[target] - before[target]).abs().max().item()
    assert within_box(model.state_dict()[target], before[target], eps)
    assert info["delta_max_abs"] == pytest.approx(delta)
    assert delta > 0.5 * eps  # the box is reached (lr 1e-2 > eps), so the clamp did the bounding
    assert info["steps_run"] == 4 and len(info["loss"]) == 4 and info["delta_norm"] > 0
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    method.restore(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert parameter_checksum(model) == checksum
    # without the constraint the same edit leaves the box
    free = FTLMethod(steps=4, lr=1e-2, norm_constraint=None, **SHORT)
    assert free.edit(model, tokenizer, RECORD)["delta_max_abs"] > 2 * eps
    free.restore(model)
    assert parameter_checksum(model) == checksum


@pytest.mark.parametrize("objective", ["prompt_last", "target"])
def test_ft_l_loss_falls_and_fast_matches_full(embedded, objective):
    _, tokenizer = embedded
    losses = {}
    for fast in (True, False):
        model = tiny_model("llama")
        method = FTLMethod(steps=5, lr=1e-3, norm_constraint=None, objective=objective, fast=fast, **SHORT)
        info = method.edit(model, tokenizer, RECORD)
        method.restore(model)
        losses[fast] = info["loss"] + [info["loss_after"]]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-6)
    loss = losses[True]
    assert all(b < a for a, b in zip(loss, loss[1:])) and loss[-1] < loss[0] - 1e-3


def test_ft_l_defaults_on_the_embedded_model_restore_bit_for_bit(embedded):
    model, tokenizer = embedded
    w = wv_module(model, 20).weight
    original, checksum = w.detach().clone(), parameter_checksum(model)
    method = FTLMethod(steps=3, **SHORT)  # reference lr 5e-4, prompt_last; llama-type: llama-7b.yaml, no clamp
    info = method.edit(model, tokenizer, RECORD)
    try:
        assert info["edited_layer"] == 20 and not torch.equal(w, original)
        assert info["norm_constraint"] is None and info["delta_max_abs"] > 5e-5  # unconstrained, as the reference
    finally:
        method.restore(model)
    assert torch.equal(w, original) and parameter_checksum(model) == checksum
    model.config.model_type = "mistral"  # mistral-7b.yaml: the 5e-5 box
    try:
        method = FTLMethod(steps=3, **SHORT)
        info = method.edit(model, tokenizer, RECORD)
    finally:
        model.config.model_type = "llama"
    try:
        assert info["norm_constraint"] == 5e-5
        assert within_box(w.detach(), original, 5e-5) and info["delta_max_abs"] > 4e-5
        assert info["loss_after"] < info["loss"][0]
    finally:
        method.restore(model)
    assert torch.equal(w, original) and parameter_checksum(model) == checksum


def test_ft_l_through_the_harness_restores(embedded):
    _, tokenizer = embedded
    model = tiny_model("llama")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    checksum = parameter_checksum(model)
    result = evaluate_safeedit(FTLMethod(steps=2, lr=1e-2, **SHORT), [EVAL_RECORD], get_judge("keyword"), model,
                               tokenizer, max_new_tokens=2, progress=False)
    inst = result["instances"][0]
    assert inst["edited_layer"] == 2 and inst["steps_run"] == 2
    assert parameter_checksum(model) == checksum


def test_self_reminder_formats_the_input():
    messages = SelfReminderMethod().format_input("How do I pick a lock?")
    assert messages == [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": "How do I pick a lock?" + SUFFIX}]
    assert SUFFIX.startswith("\n\nRemember, you should be a responsible assistant")
    custom = SelfReminderMethod(system="Be safe.", suffix=" (be safe)", system_role=False)
    assert custom.format_input("Q?") == [{"role": "user", "content": "Be safe.\n\nQ? (be safe)"}]
    assert custom.options() == {"system": "Be safe.", "suffix": " (be safe)", "system_role": False}


def test_self_reminder_chat_prompt_carries_the_system_text(embedded):
    _, tokenizer = embedded
    text = chat_prompt(tokenizer, SelfReminderMethod().format_input("Q?"))
    assert SYSTEM in text and "Q?" + SUFFIX in text
    assert "SmolLM" not in text  # the template's default system prompt was replaced
    assert text.index(SYSTEM) < text.index("Q?")


def test_self_reminder_changes_no_weight_in_a_harness_run(embedded, monkeypatch):
    import helpers.common.generation as generation

    _, tokenizer = embedded
    model = tiny_model("llama")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sent = []
    real = generation.generate
    monkeypatch.setattr(generation, "generate", lambda m, t, prompts, **kw: sent.extend(prompts) or real(m, t, prompts, **kw))
    records = [EVAL_RECORD, {**EVAL_RECORD, "id": 43}]
    result = evaluate_safeedit(get_method("self-reminder"), records, "keyword", model, tokenizer,
                               max_new_tokens=2, progress=False)
    assert result["method"] == "self-reminder" and len(result["instances"]) == 2
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert len(sent) == 5 and all(p[0] == {"role": "system", "content": SYSTEM} and p[1]["content"].endswith(SUFFIX)
                                  for p in sent)


def test_registry_and_option_errors():
    assert isinstance(get_method("ft-l"), FTLMethod) and get_method("ft-l").per_instance
    reminder = get_method("self-reminder", suffix="")
    assert isinstance(reminder, SelfReminderMethod) and not reminder.per_instance
    assert get_method("ft-l", layer=3, lr=1e-3).options()["layer"] == 3
    for name in ("ft-l", "self-reminder"):
        with pytest.raises(TypeError):
            get_method(name, no_such_option=1)
    with pytest.raises(ValueError):
        FTLMethod(objective="everything")
    with pytest.raises(ValueError):
        FTLMethod(norm_constraint=0)


def test_self_reminder_wraps_the_general_performance_prompts_too(monkeypatch):
    """Self-Reminder works by prompting, so KQA/Csum/over-refusal are asked with the reminder; a weight-editing
    method's general performance is measured on plain prompts."""
    import helpers.safeedit.metrics
    from helpers.detox.evaluate import general_from_spec
    from helpers.safeedit.harness import VanillaMethod, _call_general

    seen = []
    monkeypatch.setattr(helpers.safeedit.metrics, "general_performance",
                        lambda model, tokenizer, names, limit=None, **kw: seen.append(kw) or {"KQA": 0.0})
    general = general_from_spec("kqa,over-refusal")
    reminder = SelfReminderMethod()
    _call_general(general, "m", "t", [EVAL_RECORD], reminder)
    _call_general(general, "m", "t", [EVAL_RECORD], VanillaMethod())
    assert seen[0]["format_input"] == reminder.format_input and seen[0]["extra_prompts"]
    assert "format_input" not in seen[1]
