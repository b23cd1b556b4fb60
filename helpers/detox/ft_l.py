"""FT-L — constrained fine-tuning of one layer's MLP output matrix (a per-instance baseline of chapter 06).

For one SafeEdit record FT-L trains W_V (``mlp.down_proj``; :func:`helpers.detox.locate.wv_module`) of a **fixed**
layer with Adam on the NLL of the record's safe generation given its adversarial prompt (no KL term, no
localisation), clamps W_V after every step to within ``±norm_constraint`` of the original, element-wise
(an L∞ box, as the reference does), and copies the original back in :meth:`FTLMethod.restore`.

Reference: EasyEdit ``easyeditor/models/ft/ft_main.py`` (``execute_ft``) with the hyper-parameters of
``hparams/FT/mistral-7b.yaml`` and ``hparams/FT/llama-7b.yaml`` (commit 14cea82): ``layers: [21]``,
``num_steps: 25``, ``lr: 5e-4``, ``weight_decay: 0``, ``kl_factor: 0``, ``objective_optimization:
"prompt_last"`` (the yaml comment: "prompt_last" = FT-L, "target_new" = FT-M), ``norm_constraint: 5e-5``
(mistral-7b; llama-7b has ``false``, i.e. no clamp). The default ``norm_constraint="auto"`` follows the file
of the model's type (:data:`NORM_CONSTRAINT`). EasyEdit ships no
SafeEdit-specific FT file; its ``SafetyEditor`` runs FT with the same hparams.

Objectives (``objective``):

* ``"prompt_last"`` (default, the reference's FT-L): every safe-generation token is scored at the
  **last prompt position**, ``loss = -mean_j log p(t_j | prompt)``;
* ``"target"``: teacher-forced NLL over the safe generation (the reference's FT-M; DINM's NLL term).

Layer: the reference edits layer 21 of LLaMA-2-7B's 32 (0-based). :func:`reference_layer` maps it to the
same relative depth, the layer whose span ``[i/n, (i+1)/n)`` holds ``21.5/32``: ``floor(21.5 · n / 32)``
(32 → 21, 30 (the embedded SmolLM2-135M) → 20, 24 → 16, 4 → 2). ``layer=`` fixes one.

Differences from the reference: inputs go through the chat template (:func:`helpers.detox.edit_inputs.build_edit_inputs`,
as the harness generates; the reference uses plain ``prompt`` and ``" " + target``); prompts keep their
last ``max_prompt_tokens`` tokens, targets their first ``max_target_tokens``. As in the reference, a step
whose loss is below ``stop_loss`` (1e-2) is not taken and ends the edit.
"""
from __future__ import annotations

import contextlib
import math
import time

from ..common.models import compute_autocast, precision
from ..safeedit.harness import Method
from .locate import num_layers, wv_module, wv_module_name

REFERENCE_LAYER, REFERENCE_DEPTH = 21, 32  # hparams/FT/{llama,mistral}-7b.yaml: layers [21] of 32
DEFAULT_STEPS = 25
DEFAULT_LR = 5e-4
#: The reference's norm constraint by ``config.model_type``: hparams/FT/llama-7b.yaml has none (``false``),
#: hparams/FT/mistral-7b.yaml 5e-5; other architectures get the constrained 5e-5.
NORM_CONSTRAINT = {"llama": None, "mistral": 5e-5}
FALLBACK_NORM_CONSTRAINT = 5e-5
OBJECTIVES = ("prompt_last", "target")


def reference_layer(n_layers: int) -> int:
    """The reference's layer 21 of 32 at the same relative depth in a model with ``n_layers`` layers."""
    return min(n_layers - 1, math.floor((REFERENCE_LAYER + 0.5) * n_layers / REFERENCE_DEPTH))


@contextlib.contextmanager
def only_trainable(model, param):
    """Inside: ``param`` is the only parameter that requires grad, the model is in eval mode."""
    params = list(model.parameters())
    flags, was_training = [p.requires_grad for p in params], model.training
    model.eval()
    try:
        for p in params:
            p.requires_grad_(False)
        param.requires_grad_(True)
        yield param
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        param.grad = None
        model.train(was_training)


class FTLMethod(Method):
    """FT-L as a per-instance :class:`helpers.safeedit.harness.Method` (see the module docstring).

    Options: ``layer`` (None → :func:`reference_layer`), ``steps`` (25), ``lr`` (5e-4), ``norm_constraint``
    (``"auto"``: the reference's for the model type, :data:`NORM_CONSTRAINT` — none for LLaMA-type models
    like the embedded SmolLM2, 5e-5 for Mistral; a number; None = no clamp), ``objective`` (``"prompt_last"`` or ``"target"``), ``weight_decay`` (0),
    ``stop_loss`` (1e-2), ``fast`` (DINM's cached fast path), ``max_prompt_tokens``, ``max_target_tokens``.
    """

    name = "ft-l"
    per_instance = True

    def __init__(self, layer: int | None = None, steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR,
                 norm_constraint: float | None | str = "auto", objective: str = "prompt_last",
                 weight_decay: float = 0.0, stop_loss: float = 1e-2, fast: bool = True,
                 max_prompt_tokens: int = 1024, max_target_tokens: int = 256):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if steps < 0:
            raise ValueError("steps must be >= 0")
        if norm_constraint != "auto" and norm_constraint is not None and not (
                isinstance(norm_constraint, (int, float)) and norm_constraint > 0):
            raise ValueError("norm_constraint must be > 0, None (no clamp) or 'auto' (the reference's, by model type)")
        self.layer, self.steps, self.lr, self.norm_constraint = layer, steps, lr, norm_constraint
        self.objective, self.weight_decay, self.stop_loss, self.fast = objective, weight_decay, stop_loss, fast
        self.max_prompt_tokens, self.max_target_tokens = max_prompt_tokens, max_target_tokens
        self._saved = None  # (parameter, original copy) while an edit is applied

    def options(self) -> dict:
        """The settings, for results files."""
        return {"layer": self.layer, "steps": self.steps, "lr": self.lr, "norm_constraint": self.norm_constraint,
                "objective": self.objective, "weight_decay": self.weight_decay, "stop_loss": self.stop_loss,
                "fast": self.fast, "max_prompt_tokens": self.max_prompt_tokens,
                "max_target_tokens": self.max_target_tokens}

    def _loss_fn(self, model, inputs, layer: int, device):
        """``loss()`` under the current W_V, for the chosen objective."""
        import torch
        import torch.nn.functional as F

        from .edit_inputs import EditInputs
        from .fast_path import FullForward, UpperForward

        targets = torch.tensor(inputs.target_ids, device=device)
        if self.objective == "target":
            ids, positions = EditInputs.sequence(inputs.prompt_ids, inputs.target_ids)
        else:
            ids, positions = torch.tensor([inputs.prompt_ids]), torch.tensor([len(inputs.prompt_ids) - 1])
        ids, positions = ids.to(device), positions.to(device)
        with compute_autocast(device):  # bf16 products on a CPU with native bf16, as DINM and fine-tuning
            engine = UpperForward(model, ids, layer, positions) if self.fast else FullForward(model, ids, positions)

        def loss():
            with compute_autocast(device):
                logits = engine.logits()
                if self.objective == "target":
                    return F.cross_entropy(logits, targets)
                return -torch.log_softmax(logits[0], dim=-1)[targets].mean()
        return loss

    def edit(self, model, tokenizer, record: dict) -> dict:
        import torch

        from .edit_inputs import build_edit_inputs

        if self._saved is not None:
            raise RuntimeError("FTLMethod.edit called twice without restore(); restore the previous edit first")
        layer = self.layer if self.layer is not None else reference_layer(num_layers(model))
        eps = self.norm_constraint
        if eps == "auto":
            eps = NORM_CONSTRAINT.get(getattr(model.config, "model_type", None), FALLBACK_NORM_CONSTRAINT)
        param = wv_module(model, layer).weight
        if param.dtype in (torch.float16, torch.bfloat16):
            import warnings

            warnings.warn(f"FT-L edits {wv_module_name(model, layer)} in {param.dtype}: changes this small are "
                          "mostly rounded away in half precision; load the model in float32", stacklevel=2)
        inputs = build_edit_inputs(tokenizer, record, max_prompt_tokens=self.max_prompt_tokens,
                                   max_target_tokens=self.max_target_tokens, with_kc=False)
        original = param.detach().clone()
        self._saved = (param, original)
        history: list[float] = []
        updates = 0
        t0 = time.perf_counter()
        try:
            loss_fn = self._loss_fn(model, inputs, layer, param.device)
            with only_trainable(model, param):
                optimizer = torch.optim.Adam([param], lr=self.lr, weight_decay=self.weight_decay)
                for _ in range(self.steps):
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn()
                    history.append(float(loss.item()))
                    if loss.item() < self.stop_loss:
                        break
                    loss.backward()
                    optimizer.step()
                    updates += 1
                    if eps is not None:
                        with torch.no_grad():
                            param.copy_(torch.minimum(torch.maximum(param, original - eps), original + eps))
            with torch.no_grad():
                loss_after = float(loss_fn().item())
                delta = param.float() - original.float()
        except BaseException:
            self.restore(model)
            raise
        return {
            "edited_layer": int(layer),
            "edited_module": wv_module_name(model, layer),
            "objective": self.objective,
            "norm_constraint": eps,
            "loss": history,
            "loss_after": loss_after,
            "steps_run": updates,
            "delta_norm": float(delta.norm().item()),
            "delta_max_abs": float(delta.abs().max().item()),
            "truncated": any(inputs.truncated.values()),
            "train_seconds": time.perf_counter() - t0,
            "precision": precision(str(param.device)) if param.dtype == torch.float32 else str(param.dtype),
        }

    def restore(self, model) -> None:
        """Copy the original W_V back (bit for bit)."""
        if self._saved is None:
            return
        import torch

        param, original = self._saved
        with torch.no_grad():
            param.copy_(original)
        param.grad = None
        self._saved = None
