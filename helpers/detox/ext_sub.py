"""Ext-Sub (Hu et al., 2023): subtract the *deficiency* of an anti-expert from an expert.

An *expert* LoRA is trained on safe responses and an *anti-expert* LoRA on unsafe responses; from each merged
update matrix the anti-expert's component along the (row-wise) common direction of the two is removed, the
rest is the **deficiency**, and ``θ = θ_base + ΔW_expert − λ · deficiency`` (:func:`deficiency_component`).
"""
from __future__ import annotations

import copy

from .trained import _TrainedMethod

# ----------------------------------------------------------------------------------------------------
# Ext-Sub
# ----------------------------------------------------------------------------------------------------


def lora_deltas(peft_model) -> dict:
    """``{weight name in the base model: ΔW = scaling · B @ A}`` for every LoRA layer of a PEFT model."""
    import torch
    from peft.tuners.lora import LoraLayer

    deltas = {}
    prefix = "base_model.model."
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.lora_A:
                a = module.lora_A[adapter].weight.detach().float()
                b = module.lora_B[adapter].weight.detach().float()
                delta = (b @ a) * module.scaling[adapter]
                if getattr(module, "fan_in_fan_out", False):
                    delta = delta.T
                key = (name[len(prefix):] if name.startswith(prefix) else name) + ".weight"
                deltas[key] = deltas.get(key, torch.zeros_like(delta)) + delta
    if not deltas:
        raise ValueError("lora_deltas: the model has no LoRA layers")
    return deltas


def deficiency_component(expert: dict, anti_expert: dict, eps: float = 1e-12) -> dict:
    """Ext-Sub's extraction: per weight matrix and per row ``i``,

    ``c_i = normalise(ê_i + â_i)`` (the common direction of the expert and anti-expert rows, ê/â unit rows),
    ``deficiency_i = a_i − (a_i · c_i) c_i`` — the anti-expert's row with its common part removed.

    Rows where either update is zero have no common direction; there the deficiency is the anti-expert row
    itself when the expert row is zero (nothing shared) and zero when the anti-expert row is zero.
    """
    import torch

    out = {}
    for key, a in anti_expert.items():
        if key not in expert:
            raise KeyError(f"deficiency_component: {key!r} is in the anti-expert but not in the expert")
        e = expert[key].to(a.dtype)
        if e.shape != a.shape:
            raise ValueError(f"deficiency_component: {key!r} has shape {tuple(e.shape)} vs {tuple(a.shape)}")
        en, an = e.norm(dim=-1, keepdim=True), a.norm(dim=-1, keepdim=True)
        common = e / en.clamp_min(eps) + a / an.clamp_min(eps)
        cn = common.norm(dim=-1, keepdim=True)
        c = torch.where(cn > eps, common / cn.clamp_min(eps), torch.zeros_like(common))
        c = torch.where(en > eps, c, torch.zeros_like(c))  # no expert direction → nothing shared
        out[key] = a - (a * c).sum(-1, keepdim=True) * c
    return out


def add_to_weights(model, deltas: dict, scale: float = 1.0) -> None:
    """``W ← W + scale · ΔW`` in place for every named weight in ``deltas`` (zero deltas are skipped exactly)."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, delta in deltas.items():
            if key not in params:
                raise KeyError(f"add_to_weights: the model has no parameter {key!r}")
            if scale == 0 or not torch.any(delta):
                continue
            param = params[key]
            param.add_(delta.to(param.device, param.dtype), alpha=scale)


class ExtSubMethod(_TrainedMethod):
    """Ext-Sub: expert LoRA (safe responses) + anti-expert LoRA (unsafe responses) → subtract the deficiency.

    ``lam`` is λ (the Ext-Sub paper's α, 1.0 by default); ``use_expert=False`` applies only ``−λ·deficiency``.
    """

    name = "ext-sub"
    DEFAULTS = {**_TrainedMethod.DEFAULTS, "epochs": (2, 3), "lr": (3e-4, 2e-4), "batch_size": (4, 8),
                "lora_r": (8, 16), "lam": (1.0, 1.0), "use_expert": (True, True)}

    def lora_update(self, model, tokenizer, pairs, which: str) -> dict:
        """Train a LoRA on prompt → ``which`` (``chosen``/``rejected``) and return its merged update matrices."""
        from ..common.training import finetune

        s = self.settings
        examples = [{"prompt": p["prompt"], "response": p[which]} for p in pairs]
        peft_model = finetune(model, examples, tokenizer=tokenizer, epochs=s["epochs"], lr=s["lr"],
                              batch_size=s["batch_size"], lora=True, lora_r=s["lora_r"], lora_alpha=2 * s["lora_r"],
                              lora_dropout=0.0, merge_lora=False, seed=self.seed, progress=self.progress,
                              desc=f"Ext-Sub {'expert' if which == 'chosen' else 'anti-expert'}",
                              max_length=s["max_prompt_tokens"] + s["max_response_tokens"] + 64)
        self.history[f"loss_{which}"] = list(peft_model.finetune_history["loss"])
        deltas = lora_deltas(peft_model)
        del peft_model
        return deltas

    def combine(self, model, expert: dict, anti_expert: dict):
        """A copy of ``model`` with ``ΔW_expert − λ·deficiency`` added (``model`` itself is not changed)."""
        deficiency = deficiency_component(expert, anti_expert)
        self.history["deficiency_norm"] = float(sum(d.norm() ** 2 for d in deficiency.values()) ** 0.5)
        self.history["anti_expert_norm"] = float(sum(d.norm() ** 2 for d in anti_expert.values()) ** 0.5)
        out = copy.deepcopy(model)
        if self.settings["use_expert"]:
            add_to_weights(out, expert, 1.0)
        add_to_weights(out, deficiency, -self.settings["lam"])
        return out

    def train(self, model, tokenizer, pairs):
        expert = self.lora_update(model, tokenizer, pairs, "chosen")
        anti = self.lora_update(model, tokenizer, pairs, "rejected")
        return self.combine(model, expert, anti)
