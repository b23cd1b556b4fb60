"""MEND — Model Editor Networks with Gradient Decomposition (Mitchell et al., 2022), sized for chapter 05.

A per-instance editor for :mod:`helpers.safeedit.harness`. For a linear layer ``y = W x`` the fine-tuning gradient of
a loss is a sum of rank-1 terms, ``∇_W L = Σ_t δ_t x_tᵀ`` (``x_t`` the layer's input at token ``t``,
``δ_t = ∂L/∂y_t`` the gradient at its output). MEND never forms that matrix: a small **editor network**
``g`` maps each pair of factors to new ones, ``(x̃_t, δ̃_t) = g(x_t, δ_t)``, and the edit is

    W ← W − η_l · Σ_t δ̃_t x̃_tᵀ          (η_l: a learned step size per edited layer)

The editor is *trained* (:meth:`MENDMethod.prepare`) on training edits so that the edited model

* produces the edit target (SafeEdit: the **safe generation** for the adversarial prompt) — ``L_edit``, the
  NLL of the target after the edit, and
* keeps its behaviour elsewhere — ``L_loc``, KL(original ‖ edited) on the record's ``knowledge constrain``
  answer (an unrelated question), as in the paper's locality loss.

The gradient of ``edit_weight·L_edit + loc_weight·L_loc`` flows through the edited weights into the
editor (``torch.func.functional_call``; the language model itself is never changed during training).

What is edited: by default the MLP output projection (``mlp.down_proj`` in Llama-style models, DINM's W_V) of
the last ``n_layers`` decoder layers — "the last MLP layers", as MEND edits the last three blocks' MLPs.
Layers with the same weight shape share one editor, told apart by a learned per-layer scale and shift.

Editor network (per weight shape), as in MEND: inputs normalised per dimension by running mean/std
(collected during training, frozen afterwards); ``z = [x; δ]``; ``out = z + W₂ ReLU(W₁ z)`` with ``W₂ = 0``
at initialisation (so an untrained editor passes the normalised factors through); ``out·scale_l + shift_l``;
split back into ``(x̃, δ̃)``. Factors are taken at the positions that predict the target tokens.

:meth:`MENDMethod.edit` applies one edit in place (keeping a copy of the edited weights);
:meth:`MENDMethod.restore` copies them back exactly.
"""
from __future__ import annotations

import random
import time
from typing import Sequence

import torch

from ..common.config import get_scale, set_seed
from ..safeedit.harness import Method

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------------------------------
# The editor network
# ----------------------------------------------------------------------------------------------------


class RunningNorm(torch.nn.Module):
    """Per-dimension standardisation with running mean/variance (Welford), updated only in training mode."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    def update(self, x) -> None:
        with torch.no_grad():
            x = x.detach().double().reshape(-1, x.shape[-1])
            n = x.shape[0]
            if n == 0:
                return
            batch_mean = x.mean(0)
            batch_m2 = ((x - batch_mean) ** 2).sum(0)
            total = self.count + n
            delta = batch_mean - self.mean
            self.mean += delta * n / total
            self.m2 += batch_m2 + delta**2 * self.count * n / total
            self.count.copy_(total)

    def forward(self, x):
        if self.training:
            self.update(x)
        if self.count < 2:
            return x
        std = (self.m2 / (self.count - 1)).sqrt().to(x.dtype)
        return (x - self.mean.to(x.dtype)) / (std + self.eps)


class MENDEditorNet(torch.nn.Module):
    """``g(x, δ) → (x̃, δ̃)`` for one weight shape, shared by ``n_layers`` layers."""

    def __init__(self, x_dim: int, delta_dim: int, hidden: int = 128, n_layers: int = 1):
        super().__init__()
        nn = torch.nn
        self.x_dim, self.delta_dim = x_dim, delta_dim
        dim = x_dim + delta_dim
        self.x_norm, self.delta_norm = RunningNorm(x_dim), RunningNorm(delta_dim)
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.w2.weight)
        nn.init.zeros_(self.w2.bias)
        self.scale = nn.Parameter(torch.ones(n_layers, dim))
        self.shift = nn.Parameter(torch.zeros(n_layers, dim))

    def forward(self, x, delta, layer: int = 0):
        z = torch.cat([self.x_norm(x), self.delta_norm(delta)], dim=-1)
        out = z + self.w2(torch.relu(self.w1(z)))
        out = out * self.scale[layer] + self.shift[layer]
        return out[..., : self.x_dim], out[..., self.x_dim:]

    def pseudo_gradient(self, x, delta, layer: int = 0):
        """``Σ_t δ̃_t x̃_tᵀ`` — shape ``[delta_dim, x_dim]``, the shape of the edited ``nn.Linear`` weight."""
        x_t, d_t = self(x, delta, layer)
        return d_t.transpose(0, 1) @ x_t


# ----------------------------------------------------------------------------------------------------
# Tokenised edit examples and the factor pass
# ----------------------------------------------------------------------------------------------------


def encode_pair(tokenizer, prompt: str, target: str, *, max_prompt_tokens: int, max_target_tokens: int) -> dict:
    """Chat-template prompt + target (+ end of turn), labels only on the target (see :mod:`helpers.common.training`)."""
    from ..common.training import encode_example
    from .trained import shorten

    prompt = shorten(tokenizer, prompt, max_prompt_tokens, keep="end")
    target = shorten(tokenizer, target, max_target_tokens, keep="start")
    return encode_example(tokenizer, prompt, target, max_length=max_prompt_tokens + max_target_tokens + 96)


def _tensors(example: dict, device):
    ids = torch.tensor([example["input_ids"]], device=device)
    labels = torch.tensor([example["labels"]], device=device)
    return ids, labels


def _target_positions(labels):
    """Positions ``t`` whose next-token prediction is scored (``labels[t+1] != -100``)."""
    nxt = torch.full_like(labels, IGNORE_INDEX)
    nxt[:, :-1] = labels[:, 1:]
    return nxt[0] != IGNORE_INDEX


def _nll(logits, labels):
    return torch.nn.functional.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=IGNORE_INDEX)


def capture_factors(model, module_names: Sequence[str], ids, labels):
    """One forward/backward pass: ``({name: (x [T, in], δ [T, out])}, loss)`` at the target positions.

    The model's parameters get no gradient: a zero tensor that requires grad is added to each edited layer's
    output, and ``∂loss/∂zero`` is exactly ``δ``.
    """
    store: dict = {}
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            zero = torch.zeros_like(output, requires_grad=True)
            store[name] = (inputs[0].detach(), zero)
            return output + zero
        return hook

    for name in module_names:
        handles.append(model.get_submodule(name).register_forward_hook(make_hook(name)))
    try:
        with torch.enable_grad():
            loss = _nll(model(input_ids=ids).logits, labels)
            grads = torch.autograd.grad(loss, [store[n][1] for n in module_names])
    finally:
        for h in handles:
            h.remove()
    mask = _target_positions(labels)
    factors = {n: (store[n][0][0][mask].float(), g[0][mask].float()) for n, g in zip(module_names, grads)}
    return factors, float(loss.detach())


# ----------------------------------------------------------------------------------------------------
# The harness method
# ----------------------------------------------------------------------------------------------------


class MENDMethod(Method):
    """MEND as a per-instance :class:`helpers.safeedit.harness.Method` (``--method mend``).

    Options (small / full defaults): ``n_layers`` (3), ``module`` (W_V of the model's architecture,
    e.g. ``mlp.down_proj``), ``hidden`` (editor width, 128 / 1024), ``steps`` (editor training steps,
    6 / 2000), ``lr`` (editor Adam lr, 1e-4), ``lr_lr`` (step-size lr, 1e-4), ``edit_lr`` (initial η, 1e-3),
    ``edit_weight``/``loc_weight`` (1.0 / 1.0), ``max_prompt_tokens`` (128 / 768), ``max_target_tokens``
    (48 / 256), ``max_loc_tokens`` (64 / 256), ``limit`` (training records used, 8 / all).
    """

    name = "mend"
    per_instance = True
    DEFAULTS: dict[str, tuple] = {
        "n_layers": (3, 3), "module": (None, None), "hidden": (128, 1024), "steps": (6, 2000), "lr": (1e-4, 1e-4),
        "lr_lr": (1e-4, 1e-4), "edit_lr": (1e-3, 1e-3), "edit_weight": (1.0, 1.0), "loc_weight": (1.0, 1.0),
        "max_prompt_tokens": (128, 768), "max_target_tokens": (48, 256), "max_loc_tokens": (64, 256),
        "limit": (8, None),
    }

    def __init__(self, scale: str | None = None, seed: int = 0, progress: bool = True, **options):
        unknown = set(options) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"MENDMethod: unknown option(s) {sorted(unknown)}; known: {sorted(self.DEFAULTS)}")
        self.scale = scale or get_scale()
        index = 0 if self.scale == "small" else 1
        self.settings = {k: v[index] for k, v in self.DEFAULTS.items()}
        self.settings.update(options)
        self.seed, self.progress = seed, progress
        self.editors = None          # torch.nn.ModuleDict: shape key → MENDEditorNet
        self.edit_lrs = None         # torch.nn.Parameter [n edited layers]
        self.module_names: list[str] = []
        self.history: dict = {"loss": [], "edit_nll": [], "loc_kl": []}
        self._backup: dict | None = None

    def options(self) -> dict:
        return {"scale": self.scale, "seed": self.seed, **self.settings}

    # -- set-up ------------------------------------------------------------------------------------
    def edited_modules(self, model) -> list[str]:
        """Dotted names of the edited linear layers (the last ``n_layers`` decoder layers)."""
        from .locate import module_names, num_layers

        names = module_names(model)
        module = self.settings["module"] or names["w_v"]
        n = num_layers(model)
        k = self.settings["n_layers"]
        if not 1 <= k <= n:
            raise ValueError(f"MENDMethod: n_layers must be in [1, {n}], got {k}")
        return [f"{names['layers']}.{i}.{module}" for i in range(n - k, n)]

    @staticmethod
    def _weight(model, name: str):
        module = model.get_submodule(name)
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2:
            raise ValueError(f"MENDMethod: {name} has no 2-D weight to edit")
        return weight

    @staticmethod
    def _transposed(model, name: str) -> bool:
        return type(model.get_submodule(name)).__name__ == "Conv1D"  # GPT-2 stores weights as [in, out]

    def _shape_key(self, model, name: str) -> str:
        w = self._weight(model, name)
        out_dim, in_dim = (w.shape[1], w.shape[0]) if self._transposed(model, name) else tuple(w.shape)
        return f"{in_dim}x{out_dim}"

    def build_editor(self, model) -> None:
        """Create one editor per weight shape and the per-layer step sizes (idempotent)."""
        if self.editors is not None:
            return
        self.module_names = self.edited_modules(model)
        torch.manual_seed(self.seed)
        groups: dict[str, list[str]] = {}
        for name in self.module_names:
            groups.setdefault(self._shape_key(model, name), []).append(name)
        device = next(model.parameters()).device
        editors = {}
        for key, names in groups.items():
            in_dim, out_dim = (int(v) for v in key.split("x"))
            editors[key] = MENDEditorNet(in_dim, out_dim, hidden=self.settings["hidden"], n_layers=len(names))
        self.editors = torch.nn.ModuleDict(editors).to(device)
        self._slot = {name: (self._shape_key(model, name), groups[self._shape_key(model, name)].index(name))
                      for name in self.module_names}
        self.edit_lrs = torch.nn.Parameter(torch.full((len(self.module_names),), float(self.settings["edit_lr"]),
                                                      device=device))

    def weight_deltas(self, model, factors: dict) -> dict:
        """``{weight name: ΔW = −η_l · Σ_t δ̃_t x̃_tᵀ}`` in the layout of each edited weight."""
        deltas = {}
        for i, name in enumerate(self.module_names):
            key, layer = self._slot[name]
            x, delta = factors[name]
            grad = self.editors[key].pseudo_gradient(x, delta, layer)
            if self._transposed(model, name):
                grad = grad.transpose(0, 1)
            deltas[f"{name}.weight"] = -self.edit_lrs[i] * grad
        return deltas

    # -- training ------------------------------------------------------------------------------------
    def _examples(self, tokenizer, records: Sequence[dict]) -> list[tuple[dict, dict]]:
        from .trained import training_pairs

        s = self.settings
        pairs = training_pairs(records)
        out = []
        for record, pair in zip(records, pairs):
            kc = record["knowledge constrain"]
            edit = encode_pair(tokenizer, pair["prompt"], pair["chosen"], max_prompt_tokens=s["max_prompt_tokens"],
                               max_target_tokens=s["max_target_tokens"])
            loc = encode_pair(tokenizer, kc["prompt"], kc["answer"], max_prompt_tokens=s["max_loc_tokens"],
                              max_target_tokens=s["max_loc_tokens"])
            out.append((edit, loc))
        return out

    def prepare(self, model, tokenizer, train_records=None):
        """Train the editor on training edits; returns ``model`` unchanged."""
        from torch.func import functional_call
        from tqdm.auto import tqdm

        if not train_records:
            raise ValueError("mend: prepare() needs training records to train the editor "
                             "(load_safeedit('three') or load_safeedit('built', split='train'))")
        set_seed(self.seed)
        records = list(train_records)
        if self.settings["limit"] is not None:
            records = records[: self.settings["limit"]]
        examples = self._examples(tokenizer, records)
        self.build_editor(model)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        requires = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        optimizer = torch.optim.Adam([{"params": self.editors.parameters(), "lr": self.settings["lr"]},
                                      {"params": [self.edit_lrs], "lr": self.settings["lr_lr"]}])
        rng = random.Random(self.seed)
        order: list[int] = []
        start = time.perf_counter()
        self.editors.train()
        try:
            for _ in tqdm(range(self.settings["steps"]), desc="MEND editor", disable=not self.progress, leave=False):
                if not order:
                    order = list(range(len(examples)))
                    rng.shuffle(order)
                edit, loc = examples[order.pop()]
                ids, labels = _tensors(edit, device)
                loc_ids, loc_labels = _tensors(loc, device)
                factors, _ = capture_factors(model, self.module_names, ids, labels)
                with torch.no_grad():
                    loc_mask = loc_labels[0, 1:] != IGNORE_INDEX
                    ref_logp = torch.log_softmax(model(input_ids=loc_ids).logits[0, :-1][loc_mask].float(), -1)
                deltas = self.weight_deltas(model, factors)
                params = {n: self._weight(model, n[: -len(".weight")]) + d for n, d in deltas.items()}
                edit_nll = _nll(functional_call(model, params, args=(), kwargs={"input_ids": ids}).logits, labels)
                post = functional_call(model, params, args=(), kwargs={"input_ids": loc_ids}).logits
                post_logp = torch.log_softmax(post[0, :-1][loc_mask].float(), -1)
                loc_kl = (ref_logp.exp() * (ref_logp - post_logp)).sum(-1).mean()
                loss = self.settings["edit_weight"] * edit_nll + self.settings["loc_weight"] * loc_kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(self.editors.parameters()) + [self.edit_lrs], 1.0)
                optimizer.step()
                self.history["loss"].append(float(loss.detach()))
                self.history["edit_nll"].append(float(edit_nll.detach()))
                self.history["loc_kl"].append(float(loc_kl.detach()))
        finally:
            for n, p in model.named_parameters():
                p.requires_grad_(requires[n])
            if was_training:
                model.train()
        self.editors.eval()
        self.history["train_seconds"] = time.perf_counter() - start
        self.history["n_train_records"] = len(examples)
        return model

    # -- editing -------------------------------------------------------------------------------------
    def edit(self, model, tokenizer, record: dict) -> dict:
        """Edit ``model`` in place towards the record's safe generation for its adversarial prompt."""
        if self.editors is None:
            raise RuntimeError("mend: the editor is not trained; call prepare(model, tokenizer, train_records) first")
        if self._backup is not None:
            raise RuntimeError("mend: edit() called twice without restore()")
        from .trained import training_pairs

        pair = training_pairs([record])[0]
        s = self.settings
        example = encode_pair(tokenizer, pair["prompt"], pair["chosen"], max_prompt_tokens=s["max_prompt_tokens"],
                              max_target_tokens=s["max_target_tokens"])
        device = next(model.parameters()).device
        ids, labels = _tensors(example, device)
        requires = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            factors, nll_before = capture_factors(model, self.module_names, ids, labels)
            with torch.no_grad():
                deltas = self.weight_deltas(model, factors)
                self._backup = {}
                for key, delta in deltas.items():
                    weight = self._weight(model, key[: -len(".weight")])
                    self._backup[key] = weight.detach().clone()
                    weight.add_(delta.to(weight.dtype))
                nll_after = float(_nll(model(input_ids=ids).logits, labels))
        finally:
            for n, p in model.named_parameters():
                p.requires_grad_(requires[n])
        return {"edited_modules": list(self.module_names), "nll_before": nll_before, "nll_after": nll_after,
                "delta_norm": float(sum(float(d.norm()) ** 2 for d in deltas.values()) ** 0.5)}

    def restore(self, model) -> None:
        """Copy the edited weights back exactly."""
        if self._backup is None:
            return
        with torch.no_grad():
            for key, original in self._backup.items():
                self._weight(model, key[: -len(".weight")]).copy_(original)
        self._backup = None
