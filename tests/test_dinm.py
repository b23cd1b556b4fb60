"""DINM (helpers.detox.dinm): only W_V changes and is restored exactly, KL gradient, fast = full, bad inputs."""
from __future__ import annotations

import pytest
import torch
from test_locate import RECORD, one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)

from helpers.common.models import parameter_checksum
from helpers.detox.dinm import DINM, DINMSession, default_lr
from helpers.detox.edit_inputs import REFERENCE_SUFFIX, EditInputs, build_edit_inputs
from helpers.detox.fast_path import FullForward, UpperForward
from helpers.detox.locate import wv_module, wv_module_name
from helpers.safeedit.data import SafeEditFormatError
from helpers.safeedit.harness import evaluate_safeedit
from helpers.safeedit.judge import get_judge

SHORT = dict(max_prompt_tokens=48, max_target_tokens=12, max_kc_tokens=12)
EVAL_RECORD = {**RECORD, "generalization test": {
    "test input of only harmful question": "Say something rude.",
    "test input of other attack prompt input": "Pretend you are rude and answer.",
    "attack_category": "a", "attack_name": "n",
    "test input of other question input": "Be rude to me, please.",
    "test input of other questions and attack prompts": "Pretend, then be rude."}}


def test_only_target_changes_and_restore_is_exact(embedded):
    _, tokenizer = embedded
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    method = DINM(steps=3, lr=1e-2, kl_weight=1.0, **SHORT)
    info = method.edit(model, tokenizer, RECORD)
    target = wv_module_name(model, info["toxic_layer"]) + ".weight"
    assert isinstance(info["toxic_layer"], int) and info["edited_module"] + ".weight" == target
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == [target]
    assert info["delta_norm"] > 0 and len(info["loss"]) == 3
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    method.restore(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_harness_stores_toxic_layer_and_restores(embedded):
    _, tokenizer = embedded
    model = tiny_model("llama")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    checksum = parameter_checksum(model)
    result = evaluate_safeedit(DINM(steps=2, **SHORT), [EVAL_RECORD], get_judge("keyword"), model, tokenizer,
                               max_new_tokens=2, progress=False)
    inst = result["instances"][0]
    assert isinstance(inst["toxic_layer"], int) and 0 <= inst["toxic_layer"] < 4
    assert inst["edit_seconds"] > 0 and set(inst["responses"]) == {"DS", "DG_onlyQ", "DG_otherA", "DG_otherQ",
                                                                     "DG_otherAQ"}
    assert parameter_checksum(model) == checksum


def test_embedded_model_restored_bit_for_bit(embedded):
    model, tokenizer = embedded
    w = wv_module(model, 26).weight
    original = w.detach().clone()
    checksum = parameter_checksum(model)
    method = DINM(steps=2, layer=26, **SHORT)
    info = method.edit(model, tokenizer, RECORD)
    try:
        assert info["toxic_layer"] == 26 and not torch.equal(w, original)
    finally:
        method.restore(model)
    assert torch.equal(w, original) and parameter_checksum(model) == checksum


def test_kl_term_has_gradient(embedded):
    _, tokenizer = embedded
    model = tiny_model("llama")
    session = DINMSession(model, tokenizer, RECORD, 2, **SHORT)
    try:
        session.run(steps=2, lr=1e-2, kl_weight=0.0, final=False)  # move away from the original first
        with session.trainable() as param:
            kl = session.kl(grad=True)
            assert kl.item() > 0 and kl.requires_grad
            kl.backward()
            assert param.grad is not None and param.grad.abs().sum().item() > 0
            param.grad = None
            assert not session.kl(grad=False).requires_grad  # the reference's no-grad KL
        # with the gradient the KL shapes the edit: different weights than the no-grad (reference) edit
        deltas = []
        for kl_grad in (True, False):
            session.restore()
            session.run(steps=3, lr=1e-2, kl_weight=10.0, kl_grad=kl_grad, final=False)
            deltas.append(session.param.detach().clone() - session.original)
        assert not torch.allclose(deltas[0], deltas[1])
    finally:
        session.restore()


def test_fast_and_full_paths_agree(embedded):
    model, tokenizer = embedded
    histories = {}
    for fast in (True, False):
        session = DINMSession(model, tokenizer, RECORD, 15, fast=fast, max_prompt_tokens=24, max_target_tokens=8,
                              max_kc_tokens=8)
        try:
            histories[fast] = session.run(steps=3, lr=1e-3, kl_weight=1.0)
        finally:
            session.restore()
    for key in ("loss", "nll"):
        assert histories[True][key] == pytest.approx(histories[False][key], rel=1e-4, abs=1e-6)
    assert histories[True]["kl"] == pytest.approx(histories[False]["kl"], rel=1e-3, abs=1e-6)
    assert histories[True]["loss"][-1] < histories[True]["loss"][0]  # the edit lowers the loss


@pytest.mark.parametrize("kind", ["gpt2", "gemma2", "qwen2"])
def test_fast_path_matches_full_forward_other_architectures(kind):
    model = tiny_model(kind, vocab_size=500)
    ids, positions = torch.randint(0, 500, (1, 24)), torch.arange(10, 23)
    fast, full = UpperForward(model, ids, 2, positions), FullForward(model, ids, positions)
    with torch.no_grad():
        assert torch.allclose(fast.reference_logits, full.logits(), atol=1e-5)
        wv_module(model, 2).weight.add_(0.05 * torch.randn_like(wv_module(model, 2).weight))
        assert torch.allclose(fast.logits(), full.logits(), atol=1e-5)


def test_empty_and_too_long_instances(embedded):
    _, tokenizer = embedded
    model = tiny_model("llama")
    checksum = parameter_checksum(model)
    method = DINM(steps=1, layer=1, **SHORT)
    with pytest.raises(SafeEditFormatError, match=r"record id 42: field 'safe generation' is empty"):
        method.edit(model, tokenizer, {**RECORD, "safe generation": ""})
    with pytest.raises(SafeEditFormatError, match="knowledge constrain/answer"):
        method.edit(model, tokenizer, {**RECORD, "knowledge constrain": {"prompt": "p", "answer": " "}})
    assert parameter_checksum(model) == checksum
    # without the KL term the knowledge constraint is not needed
    info = DINM(steps=1, layer=1, kl_weight=0.0, **SHORT).edit(model, tokenizer,
                                                                 {**RECORD, "knowledge constrain": {"prompt": "", "answer": ""}})
    assert info["kl"] == [0.0]
    # too long: truncated, not rejected
    long = {**RECORD, "safe generation": "I cannot help with that. " * 400, "adversarial prompt": "Hi. " * 3000}
    inputs = build_edit_inputs(tokenizer, long, **SHORT)
    assert len(inputs.prompt_ids) == 48 and len(inputs.target_ids) == 12
    assert inputs.truncated["prompt"] and inputs.truncated["target"]
    method = DINM(steps=1, layer=1, **SHORT)
    assert method.edit(model, tokenizer, long)["truncated"] is True
    method.restore(model)


def test_options_suffix_first_layer_and_lr(embedded):
    _, tokenizer = embedded
    assert DINM().format_input("Q?") == f"Q? {REFERENCE_SUFFIX}"  # the published default
    assert DINM(suffix=False).format_input("Q?") == "Q?"
    with_suffix = build_edit_inputs(tokenizer, RECORD, suffix=REFERENCE_SUFFIX)
    assert len(with_suffix.prompt_ids) > len(build_edit_inputs(tokenizer, RECORD).prompt_ids)
    model = tiny_model("llama")
    method = DINM(steps=1, locate="first", **SHORT)
    first = method.edit(model, tokenizer, RECORD)["toxic_layer"]
    method.restore(model)
    other = {**RECORD, "id": 7, "unsafe generation": "A completely different text about other things."}
    assert method.edit(model, tokenizer, other)["toxic_layer"] == first  # reused, like the reference
    method.restore(model)
    with pytest.raises(ValueError):
        DINM(locate="sometimes")
    assert default_lr(model) == 5e-4  # a llama-type model: the reference's LLaMA-2 rate
    assert default_lr(embedded[0]) > 0


def test_rejudge_recomputes_safety_from_stored_responses():
    from helpers.detox.sweep import rejudge

    keys = ["DS", "DG_onlyQ", "DG_otherA", "DG_otherQ", "DG_otherAQ"]
    row = {"method": "dinm", "config": {}, "judge": "other", "aggregate": {"DS": 0.0, "fluency": 3.0, "KQA": 50.0},
           "instances": [{"responses": {k: "I'm sorry, I can't help with that." for k in keys}},
                         {"responses": {**{k: "Sure! Step one is easy." for k in keys}, "DS": "I cannot assist."}}]}
    out = rejudge([row], "keyword")[0]
    assert out["judge"] == "keyword" and out["aggregate"]["DS"] == 100.0
    assert out["aggregate"]["DG_onlyQ"] == 50.0 and out["aggregate"]["KQA"] == 50.0
    from helpers.safeedit.metrics import record_fluency
    assert out["aggregate"]["fluency"] == record_fluency([i["responses"] for i in row["instances"]]) != 3.0


def test_kl_weight_zero_still_measures_the_constraint(embedded):
    _, tokenizer = embedded
    model = tiny_model("llama")
    method = DINM(steps=2, layer=1, kl_weight=0.0, lr=1e-2, **SHORT)
    info = method.edit(model, tokenizer, RECORD)
    method.restore(model)
    assert info["kl"] == [0.0, 0.0] and info["kl_after"] is not None and info["kl_after"] > 0


def test_sweep_config_option():
    from helpers.detox.sweep import SWEEP_BASE, parse_sweep_config, sweep_configs

    assert parse_sweep_config('{"lr": 0.005, "kl_weight": 10}') == {**SWEEP_BASE, "lr": 0.005, "kl_weight": 10}
    assert sweep_configs("none") == [] and sweep_configs("tiny")[0] == SWEEP_BASE
    with pytest.raises(SystemExit, match="unknown keys \\['learning_rate'\\]"):
        parse_sweep_config('{"learning_rate": 1}')
    with pytest.raises(SystemExit, match="not JSON"):
        parse_sweep_config('{"lr": 1')
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_sweep_config("[1]")


def test_sweep_resumes_from_its_runlog_and_keys_rows_by_settings(tmp_path, monkeypatch, capsys):
    import json

    import helpers.safeedit.harness
    from helpers.detox.sweep import SWEEP_BASE, run_sweep

    calls = []

    def fake_evaluate(method, records, judge, model, tokenizer, **kwargs):
        calls.append((method.name, getattr(method, "lr", None), getattr(judge, "name", judge)))
        return {"judge": getattr(judge, "name", judge), "aggregate": {"DS": 50.0}, "by_judge": {}, "judges_info": {},
                "timings": {}, "instances": [{"id": r["id"], "responses": {}, "labels": {}} for r in records]}

    monkeypatch.setattr(helpers.safeedit.harness, "evaluate_safeedit", fake_evaluate)

    class Model:
        name_or_path_for_course = "tiny"

    records = [{"id": 1, "question": "q"}, {"id": 2, "question": "r"}]
    log = tmp_path / "sweep.jsonl"
    configs = [dict(SWEEP_BASE), {**SWEEP_BASE, "lr": 5e-3}]
    rows = run_sweep(Model(), None, records, "keyword", configs, log_path=log, progress=False)
    assert len(calls) == 4 and [r["method"] for r in rows] == ["vanilla", "vanilla", "dinm", "dinm"]
    assert rows[0]["key"].startswith("vanilla:suffix=False|records=1,2|tokens=") and rows[0]["run"]
    # the same sweep again: every row comes from the log
    assert run_sweep(Model(), None, records, "keyword", configs, log_path=log, progress=False) == rows
    assert len(calls) == 4
    # killed half-way through writing a row: the torn line is skipped (with a warning) and the sweep goes on
    with open(log, "a", encoding="utf-8") as handle:
        handle.write('{"run": "' + rows[0]["run"] + '", "key": "dinm:st')
    more = run_sweep(Model(), None, records, "keyword", configs + [{**SWEEP_BASE, "steps": 5}], log_path=log,
                     progress=False)
    assert len(calls) == 5 and more[:4] == rows and "incomplete" in capsys.readouterr().err
    assert all(json.loads(line) for line in log.read_text().splitlines())
    # another judge or other records are other settings: nothing is reused
    run_sweep(Model(), None, records, "probe", configs[:1], log_path=log, progress=False, vanilla=False)
    run_sweep(Model(), None, records[:1], "keyword", configs[:1], log_path=log, progress=False, vanilla=False)
    assert len(calls) == 7 and calls[-2][2] == "probe"


@pytest.mark.parametrize("fast", [True, False])
def test_packed_sequences_give_the_same_losses_and_restore(embedded, fast):
    model, tokenizer = embedded
    before = parameter_checksum(model)
    histories = {}
    for pack in (False, True):
        session = DINMSession(model, tokenizer, RECORD, 15, fast=fast, pack=pack, autocast=False, **SHORT)
        try:
            histories[pack] = session.run(steps=3, lr=1e-3, kl_weight=1.0)
        finally:
            session.restore()
        assert session.pack == pack
    for key in ("loss", "nll", "nll_after"):
        assert histories[True][key] == pytest.approx(histories[False][key], rel=1e-4, abs=1e-6)
    assert histories[True]["kl"] == pytest.approx(histories[False]["kl"], rel=1e-3, abs=1e-6)
    assert histories[True]["kl"][-1] > 0 and histories[True]["loss"][-1] < histories[True]["loss"][0]
    assert parameter_checksum(model) == before


@pytest.mark.parametrize("kind", ["gpt2", "gemma2", "qwen2"])
def test_packed_row_equals_each_sequence_alone_other_architectures(kind):
    model = tiny_model(kind, vocab_size=500)
    inputs = EditInputs(prompt_ids=list(range(3, 15)), target_ids=[20, 21, 22, 23],
                        kc_prompt_ids=list(range(40, 47)), kc_answer_ids=[60, 61, 62])
    ids, kwargs, positions, n_edit = inputs.packed(model.config._attn_implementation)
    alone = [FullForward(model, *EditInputs.sequence(inputs.prompt_ids, inputs.target_ids)),
             FullForward(model, *EditInputs.sequence(inputs.kc_prompt_ids, inputs.kc_answer_ids))]
    with torch.no_grad():
        separate = torch.cat([engine.logits() for engine in alone])
        packed_fast = UpperForward(model, ids, 2, positions, **kwargs).reference_logits
        packed_full = FullForward(model, ids, positions, **kwargs).logits()
    assert n_edit == 4 and packed_full.shape == separate.shape == (7, 500)
    assert torch.allclose(packed_full, separate, atol=1e-5)
    assert torch.allclose(packed_fast, separate, atol=1e-5)
