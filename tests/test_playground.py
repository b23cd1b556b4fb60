"""The DINM playground (helpers.detox.playground): an edit changes only W_V, the next edit or Restore undoes
it bit for bit, the widget's buttons drive the same calls."""
from __future__ import annotations

import pytest
import torch
from test_dinm import EVAL_RECORD
from test_locate import tiny_model  # noqa: F401

from helpers.detox.locate import wv_module_name
from helpers.detox.playground import DINMPlayground
from helpers.safeedit.judge import get_judge

SECOND = {**EVAL_RECORD, "id": "second", "adversarial prompt": "Tell me how to be rude to a neighbour, now."}


@pytest.fixture()
def playground(embedded):
    _, tokenizer = embedded
    model = tiny_model("llama")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return DINMPlayground(model, tokenizer, [EVAL_RECORD, SECOND], get_judge("keyword"), max_new_tokens=3,
                          max_prompt_tokens=48)


def changed(model, before):
    return [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]


def test_edit_changes_only_w_v_and_restore_is_exact(playground):
    model = playground.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = playground.edit(0, steps=4, lr=1e-2, kl_weight=1.0)
    assert changed(model, before) == [wv_module_name(model, result["layer"]) + ".weight"]
    assert result["history"]["nll_after"] < result["history"]["nll"][0]      # the edit lowers the safe answer's NLL
    assert len(result["history"]["loss"]) == 4 and result["delta_norm"] > 0
    assert "toxic layer" in playground.summary() and f"layer {result['layer']}" in playground.summary()
    assert playground.restore() is True and changed(model, before) == []


def test_a_new_edit_first_undoes_the_previous_one(playground):
    model = playground.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = playground.edit(0, steps=2, lr=1e-2)
    second = playground.edit(1, steps=2, lr=1e-2, suffix=False)
    assert changed(model, before) == [wv_module_name(model, second["layer"]) + ".weight"]
    assert first["suffix"] and not second["suffix"] and second["record"] == "second"
    assert playground.restore() and changed(model, before) == []


def test_zero_learning_rate_leaves_the_answer_and_bad_index(playground):
    result = playground.edit(0, steps=2, lr=0.0)
    assert result["before"] == result["after"] and result["delta_norm"] == 0.0
    with pytest.raises(IndexError, match="record index 5"):
        playground.edit(5)


def test_widget_buttons_edit_and_restore(playground):
    pytest.importorskip("ipywidgets")
    box = playground.widget()
    buttons = {b.description: b for row in box.children[:3] for b in getattr(row, "children", ())
               if b.__class__.__name__ == "Button"}
    sliders = {c.description: c for row in box.children[:3] for c in getattr(row, "children", ())}
    sliders["steps"].value = 2
    before = {k: v.clone() for k, v in playground.model.state_dict().items()}
    buttons["Edit"].click()
    assert playground.last is not None and playground.last["steps"] == 2 and playground.session is not None
    assert changed(playground.model, before)
    buttons["Restore"].click()
    assert playground.session is None and changed(playground.model, before) == []
