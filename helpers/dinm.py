"""DINM — Detoxifying with Intraoperative Neural Monitoring (chapter 04).

For one SafeEdit record DINM

1. locates the **toxic layer** (:mod:`helpers.locate`: the layer where the hidden states of the safe and the
   unsafe generation differ most);
2. edits **only W_V of that layer** (the MLP output matrix, ``mlp.down_proj`` in Llama-style models) with
   Adam for a few steps (10 by default) on

       loss = NLL(safe generation | adversarial input) + λ · KL(original ‖ edited)  on the record's
              ``knowledge constrain`` instance (prompt → answer)

   (the KL is averaged over the answer tokens; λ = ``kl_weight``);
3. is evaluated, then the original W_V is copied back (exact restore).

Inputs go through the tokenizer's chat template, as the harness's generations do (the reference
concatenates plain text: ``prompt + " " + target``), and the KL is read at the positions that predict the
answer tokens (the reference takes the last ``len(answer)`` positions, one to the right). Two differences
from the reference implementation (EasyEdit ``dinm_main.py``) matter more:

* the reference computes the edited model's KL logits under ``torch.no_grad()``, so its KL term never
  shapes the edit (it only shows up in the printed loss). Here the KL **carries gradient**;
  ``kl_grad=False`` reproduces the reference for the ablation;
* the reference locates the layer for the first record and reuses it (``locate="first"`` reproduces
  that); here it is located per instance.

The reference writes ``loss = 0.1 · NLL + KL``; with Adam (invariant to the scale of the loss) that is
the same update as ``NLL + 10 · KL``, i.e. ``kl_weight=10``.

**Fast path** (``fast=True``, the default). Nothing below the toxic layer depends on W_V of that layer, so
one no-grad pass caches, for the edit input and for the knowledge-constraint input, the input of the MLP
output projection and the residual stream around it (for architectures that normalise the MLP output
before adding it, like Gemma 2: the input of the toxic layer), plus the keyword arguments every upper
layer receives (masks, rotary embeddings). Each step then runs only ``W_V`` and the layers above it, and the
final norm and LM head only at the positions the loss reads. The original model's reference distribution
comes out of the same cached pass, once. ``fast=False`` is the straightforward implementation: a full
forward pass with logits at every position for both inputs, every step. ``benchmarks/bench_dinm.py``
compares the two.

``python -m helpers safeedit-eval --method dinm`` evaluates DINM with the defaults below;
``python -m helpers.dinm sweep`` runs the hyper-parameter sweep of chapter 04.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Sequence

from .harness import Method
from .locate import decoder_layers, locate_toxic_layer, module_names, wv_module, wv_module_name

#: The reference implementation's suffix, appended to every input (edit, knowledge constraint, evaluation).
REFERENCE_SUFFIX = "If the user's request is reasonable, give the correct answer. Please give the right response:"

#: Learning rate per model: the course's embedded model, then the reference hparams by ``config.model_type``
#: (EasyEdit hparams/DINM: llama-7b 5e-4, mistral-7b 1e-5, gpt2-xl 5e-4). The embedded model's rate was chosen
#: on 20 **built validation** records with the published recipe (10 steps, λ = 10, suffix on; chapter 04,
#: ``helpers/resources/precomputed/dinm_lr_validation_cpu.json``): 1e-3 gives DS 85 / DG_avg 62.5, 5e-3 DS 65 /
#: DG_avg 56.2, both with KQA 8.3 against vanilla's 10.0 (60 questions).
DEFAULT_LR: dict[str, float] = {
    "smollm2-135m-instruct": 1e-3,
    "llama": 5e-4,
    "mistral": 1e-5,
    "gpt2": 5e-4,
}
FALLBACK_LR = 5e-4
DEFAULT_STEPS = 10
#: λ = 10: the reference's ratio (``0.1 · NLL + KL``), now with gradient. Chapter 04's sweep: same DS/DG as
#: λ = 1 on the embedded model, with about a quarter of the drift on the knowledge constraint.
DEFAULT_KL_WEIGHT = 10.0


def default_lr(model) -> float:
    """The learning rate :data:`DEFAULT_LR` gives ``model`` (course name first, then model type)."""
    name = getattr(model, "name_or_path_for_course", None) or ""
    from .models import EMBEDDED_ALIASES, EMBEDDED_NAME

    if name in EMBEDDED_ALIASES:
        name = EMBEDDED_NAME
    if name in DEFAULT_LR:
        return DEFAULT_LR[name]
    kind = getattr(model.config, "model_type", None)
    return DEFAULT_LR.get(kind, FALLBACK_LR)


def with_suffix(text: str, suffix: str | None) -> str:
    return f"{text} {suffix}" if suffix else text


def _suffix(value) -> str | None:
    if value is True:
        return REFERENCE_SUFFIX
    if not value or (isinstance(value, str) and value.strip().lower() in ("none", "off", "false")):
        return None  # the paper's "without suffix" ablation (``--option suffix=none``)
    if isinstance(value, str):
        return value
    raise TypeError(f"suffix must be a bool or a string, got {type(value).__name__}")


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------
@dataclass
class EditInputs:
    """Token ids of one record's two training sequences (prompt part, then the part the loss reads)."""

    prompt_ids: list[int]
    target_ids: list[int]
    kc_prompt_ids: list[int] = field(default_factory=list)
    kc_answer_ids: list[int] = field(default_factory=list)
    truncated: dict = field(default_factory=dict)

    @staticmethod
    def sequence(prompt: list[int], answer: list[int]):
        """``(input_ids [1, P+A], positions [A])``: the positions whose logits predict the answer tokens."""
        import torch

        ids = torch.tensor([prompt + answer], dtype=torch.long)
        positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1)
        return ids, positions


def _text_field(record: dict, path: tuple[str, ...], source: str, purpose: str) -> str:
    from .data import SafeEditFormatError

    value = record
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value.strip():
        state = "missing" if value is None else "empty" if isinstance(value, str) else f"a {type(value).__name__}"
        raise SafeEditFormatError(f"{source}: record id {record.get('id')}: field {'/'.join(path)!r} is {state}; "
                                  f"DINM needs it {purpose}")
    return value


def build_edit_inputs(tokenizer, record: dict, *, suffix: str | None = None, max_prompt_tokens: int = 1024,
                      max_target_tokens: int = 256, max_kc_tokens: int = 256, with_kc: bool = True,
                      source: str = "<records>") -> EditInputs:
    """Tokenise a record for DINM (chat template, as the harness generates).

    Too long inputs are truncated, never rejected: a prompt keeps its **last** ``max_prompt_tokens`` tokens
    (where the question usually is, as in :func:`helpers.generation.generate`), a target (safe generation,
    knowledge-constraint answer) its **first** ``max_target_tokens`` / ``max_kc_tokens`` tokens; what was
    cut is reported in ``truncated``. An empty safe generation (or, with ``with_kc``, an empty
    knowledge-constraint prompt or answer) raises :class:`helpers.data.SafeEditFormatError` naming the record.
    """
    from .generation import chat_prompt

    if min(max_prompt_tokens, max_target_tokens, max_kc_tokens) < 1:
        raise ValueError("the max_*_tokens limits must be at least 1")
    prompt = _text_field(record, ("adversarial prompt",), source, "as the edit input")
    target = _text_field(record, ("safe generation",), source, "as the edit target")

    def encode(text: str, *, is_prompt: bool) -> list[int]:
        return tokenizer(chat_prompt(tokenizer, with_suffix(text, suffix)) if is_prompt else text,
                         add_special_tokens=False)["input_ids"]

    truncated = {}
    p_ids, t_ids = encode(prompt, is_prompt=True), encode(target, is_prompt=False)
    truncated["prompt"] = len(p_ids) > max_prompt_tokens
    truncated["target"] = len(t_ids) > max_target_tokens
    inputs = EditInputs(p_ids[-max_prompt_tokens:], t_ids[:max_target_tokens], truncated=truncated)
    if with_kc:
        kc_prompt = _text_field(record, ("knowledge constrain", "prompt"), source, "for the KL constraint")
        kc_answer = _text_field(record, ("knowledge constrain", "answer"), source, "for the KL constraint")
        q_ids, a_ids = encode(kc_prompt, is_prompt=True), encode(kc_answer, is_prompt=False)
        truncated["kc_prompt"] = len(q_ids) > max_prompt_tokens
        truncated["kc_answer"] = len(a_ids) > max_kc_tokens
        inputs.kc_prompt_ids, inputs.kc_answer_ids = q_ids[-max_prompt_tokens:], a_ids[:max_kc_tokens]
    if not inputs.target_ids or (with_kc and not inputs.kc_answer_ids):
        from .data import SafeEditFormatError

        raise SafeEditFormatError(f"{source}: record id {record.get('id')}: a target tokenizes to nothing")
    return inputs


# ----------------------------------------------------------------------------------------------------
# Forward engines: logits at the positions the loss reads, as a function of the current W_V
# ----------------------------------------------------------------------------------------------------
def _head(model, hidden, norm: bool = True):
    """Final norm (unless ``norm=False``) → LM head (→ Gemma-2 logit soft-capping), in float32."""
    import torch

    names = module_names(model)
    if norm:
        hidden = model.get_submodule(names["norm"])(hidden)
    logits = model.get_submodule(names["lm_head"])(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


class FullForward:
    """The straightforward way: a full forward pass, logits at every position, then the ones needed."""

    def __init__(self, model, input_ids, positions):
        self.model, self.input_ids, self.positions = model, input_ids, positions

    def logits(self):
        return self.model(input_ids=self.input_ids, use_cache=False).logits[0, self.positions].float()


def _call_layer(layer, hidden, args, kwargs):
    out = layer(hidden, *args[1:], **kwargs) if args else layer(**{**kwargs, "hidden_states": hidden})
    return out[0] if isinstance(out, tuple) else out


class UpperForward:
    """The fast path: caches everything below W_V of ``layer`` once, then recomputes only what W_V changes.

    One no-grad pass records (with hooks) the keyword arguments of every layer from ``layer`` up, and
    either the input of W_V plus the residual stream around it (architectures whose layer output is
    ``residual + W_V(a)``) or the input of ``layer``. :meth:`logits` then runs W_V (or the whole ``layer``),
    the layers above it, and the final norm and LM head only at ``positions``. The same pass yields the
    original logits at ``positions`` (:attr:`reference_logits`).
    """

    def __init__(self, model, input_ids, layer: int, positions):
        import torch

        self.model, self.layer, self.positions = model, layer, positions
        names = module_names(model)
        self.layers = decoder_layers(model)
        self.wv = wv_module(model, layer)
        self.residual = bool(names["mlp_residual"])
        calls, cache, handles = {}, {}, []

        def pre_hook(index):
            def hook(module, args, kwargs):
                calls[index] = (args, kwargs)
            return hook

        for i in range(layer, len(self.layers)):
            handles.append(self.layers[i].register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        if self.residual:
            handles.append(self.wv.register_forward_hook(lambda m, a, o: cache.update(a=a[0], o=o)))
            handles.append(self.layers[layer].register_forward_hook(
                lambda m, a, o: cache.update(out=o[0] if isinstance(o, tuple) else o)))
        try:
            with torch.no_grad():
                # the base model's output is already after the final norm: only the LM head is left
                hidden = model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
                self.reference_logits = _head(model, hidden[0, positions], norm=False)
        finally:
            for handle in handles:
                handle.remove()
        missing = [i for i in range(layer, len(self.layers)) if i not in calls]
        if missing:
            raise RuntimeError(f"fast path: layers {missing} were not called by the model's forward pass")
        self.calls = {}
        for i, (args, kwargs) in calls.items():
            # keep the hidden-state input only where it is needed (``layer`` without the residual shortcut)
            keep = i == layer and not self.residual
            self.calls[i] = (args if keep or not args else (None,) + tuple(args[1:]), kwargs)
        if self.residual:
            self.a = cache["a"]
            self.base = cache["out"] - cache["o"]  # the residual stream around W_V

    def hidden(self):
        """The last layer's output (before the final norm) under the current W_V."""
        if self.residual:
            h = self.base + self.wv(self.a)
        else:
            args, kwargs = self.calls[self.layer]
            h = _call_layer(self.layers[self.layer], args[0] if args else kwargs["hidden_states"], args, kwargs)
        for i in range(self.layer + 1, len(self.layers)):
            args, kwargs = self.calls[i]
            h = _call_layer(self.layers[i], h, args, kwargs)
        return h

    def logits(self):
        return _head(self.model, self.hidden()[0, self.positions])


# ----------------------------------------------------------------------------------------------------
# One edit
# ----------------------------------------------------------------------------------------------------
class DINMSession:
    """Everything for editing one record at one layer; :meth:`run` edits, :meth:`restore` undoes it exactly.

    The original W_V is cloned at construction. ``fast`` picks :class:`UpperForward` or :class:`FullForward`.
    """

    def __init__(self, model, tokenizer, record: dict, layer: int, *, fast: bool = True, suffix: str | None = None,
                 use_kl: bool = True, max_prompt_tokens: int = 1024, max_target_tokens: int = 256,
                 max_kc_tokens: int = 256, source: str = "<records>"):
        import torch

        self.model, self.layer, self.fast, self.use_kl = model, layer, fast, use_kl
        self.module_name = wv_module_name(model, layer)
        self.param = wv_module(model, layer).weight
        self.inputs = build_edit_inputs(tokenizer, record, suffix=suffix, max_prompt_tokens=max_prompt_tokens,
                                        max_target_tokens=max_target_tokens, max_kc_tokens=max_kc_tokens,
                                        with_kc=use_kl, source=source)
        if self.param.dtype in (torch.float16, torch.bfloat16):
            import warnings

            warnings.warn(f"DINM edits {self.module_name} in {self.param.dtype}: Adam steps this small are mostly "
                          "rounded away in half precision; load the model with dtype=torch.float32", stacklevel=2)
        self.original = self.param.detach().clone()
        device = self.param.device
        ids, positions = EditInputs.sequence(self.inputs.prompt_ids, self.inputs.target_ids)
        self.targets = torch.tensor(self.inputs.target_ids, device=device)
        ids, positions = ids.to(device), positions.to(device)
        self.edit_engine = UpperForward(model, ids, layer, positions) if fast else FullForward(model, ids, positions)
        self.ref_logp = None
        if use_kl:
            kc_ids, kc_pos = EditInputs.sequence(self.inputs.kc_prompt_ids, self.inputs.kc_answer_ids)
            kc_ids, kc_pos = kc_ids.to(device), kc_pos.to(device)
            if fast:
                self.kc_engine = UpperForward(model, kc_ids, layer, kc_pos)
                reference = self.kc_engine.reference_logits
            else:
                self.kc_engine = FullForward(model, kc_ids, kc_pos)
                with torch.no_grad():
                    reference = self.kc_engine.logits()
            self.ref_logp = torch.log_softmax(reference, dim=-1)  # the original model, computed once
            self.ref_p = self.ref_logp.exp()

    # --- loss terms --------------------------------------------------------------------------------
    def nll(self):
        """Mean negative log-likelihood of the safe generation given the adversarial input."""
        import torch.nn.functional as F

        return F.cross_entropy(self.edit_engine.logits(), self.targets)

    def kl(self, grad: bool = True):
        """KL(original ‖ edited) on the knowledge-constraint answer, mean over its tokens.

        ``grad=False`` computes the edited logits under ``no_grad``, as the reference implementation does.
        """
        import torch

        if not self.use_kl:
            raise RuntimeError("this session was built with use_kl=False")
        with contextlib.nullcontext() if grad else torch.no_grad():
            logp = torch.log_softmax(self.kc_engine.logits(), dim=-1)
            return (self.ref_p * (self.ref_logp - logp)).sum(-1).mean()

    @contextlib.contextmanager
    def trainable(self):
        """Inside: W_V of the layer is the only parameter that requires grad, the model is in eval mode."""
        params = list(self.model.parameters())
        flags = [p.requires_grad for p in params]
        was_training = self.model.training
        self.model.eval()
        try:
            for p in params:
                p.requires_grad_(False)
            self.param.requires_grad_(True)
            yield self.param
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
            self.param.grad = None
            self.model.train(was_training)

    def run(self, *, steps: int = DEFAULT_STEPS, lr: float = 5e-4, kl_weight: float = DEFAULT_KL_WEIGHT,
            kl_grad: bool = True, weight_decay: float = 0.0, stop_loss: float = 1e-4, final: bool = True) -> dict:
        """Edit W_V with Adam; returns the per-step ``loss``/``nll``/``kl`` (before each update), timings and,
        with ``final``, ``nll_after``/``kl_after`` (after the last update)."""
        import torch

        if steps < 0:
            raise ValueError("steps must be >= 0")
        use_kl = self.use_kl and kl_weight > 0
        history = {"loss": [], "nll": [], "kl": [], "step_seconds": []}
        with self.trainable() as param:
            optimizer = torch.optim.Adam([param], lr=lr, weight_decay=weight_decay)
            for _ in range(steps):
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                nll = self.nll()
                kl = self.kl(grad=kl_grad) if use_kl else torch.zeros((), device=nll.device)
                loss = nll + kl_weight * kl
                history["loss"].append(float(loss.item()))
                history["nll"].append(float(nll.item()))
                history["kl"].append(float(kl.item()))
                if loss.item() < stop_loss:
                    history["step_seconds"].append(time.perf_counter() - t0)
                    break
                loss.backward()
                optimizer.step()
                history["step_seconds"].append(time.perf_counter() - t0)
        if final:
            with torch.no_grad():
                history["nll_after"] = float(self.nll().item())
                if self.use_kl:
                    history["kl_after"] = float(self.kl(grad=False).item())
        return history

    def delta_norm(self) -> float:
        """Frobenius norm of the change of W_V."""
        import torch

        with torch.no_grad():
            return float((self.param.float() - self.original.float()).norm().item())

    def restore(self) -> None:
        """Copy the original W_V back (bit for bit)."""
        import torch

        with torch.no_grad():
            self.param.copy_(self.original)
        self.param.grad = None


# ----------------------------------------------------------------------------------------------------
# The harness method
# ----------------------------------------------------------------------------------------------------
def _has_constraint(record: dict) -> bool:
    kc = record.get("knowledge constrain")
    return isinstance(kc, dict) and all(isinstance(kc.get(k), str) and kc[k].strip() for k in ("prompt", "answer"))


class DINM(Method):
    """DINM as a per-instance :class:`helpers.harness.Method`.

    Options: ``steps`` (10), ``lr`` (None → :func:`default_lr`), ``kl_weight`` λ, ``kl_grad`` (True; False
    = the reference's no-grad KL), ``suffix`` (True = :data:`REFERENCE_SUFFIX`, as published, also appended to
    the evaluation inputs as the reference does; ``suffix=none``/False is the paper's ablation), ``variant``/``context`` of the localisation, ``locate``
    (``"per_instance"``, or ``"first"`` to reuse the first record's layer like the reference), ``layer``
    (a fixed layer, skips localisation), ``fast`` (the fast path), ``max_prompt_tokens``,
    ``max_target_tokens``, ``max_kc_tokens``, ``weight_decay``, ``stop_loss``.
    """

    name = "dinm"
    per_instance = True

    def __init__(self, steps: int = DEFAULT_STEPS, lr: float | None = None, kl_weight: float = DEFAULT_KL_WEIGHT,
                 kl_grad: bool = True, suffix: bool | str = True, variant: str = "reference",
                 context: str = "none", locate: str = "per_instance", layer: int | None = None, fast: bool = True,
                 max_prompt_tokens: int = 1024, max_target_tokens: int = 256, max_kc_tokens: int = 256,
                 locate_max_tokens: int | None = None, weight_decay: float = 0.0, stop_loss: float = 1e-4):
        if locate not in ("per_instance", "first"):
            raise ValueError("locate must be 'per_instance' or 'first'")
        self.steps, self.lr, self.kl_weight, self.kl_grad = steps, lr, kl_weight, kl_grad
        self.suffix = _suffix(suffix)
        self.variant, self.context, self.locate, self.layer, self.fast = variant, context, locate, layer, fast
        self.max_prompt_tokens, self.max_target_tokens, self.max_kc_tokens = (max_prompt_tokens, max_target_tokens,
                                                                               max_kc_tokens)
        self.locate_max_tokens = locate_max_tokens
        self.weight_decay, self.stop_loss = weight_decay, stop_loss
        self._session: DINMSession | None = None
        self._first_layer: int | None = None

    def options(self) -> dict:
        """The settings, for results files."""
        return {"steps": self.steps, "lr": self.lr, "kl_weight": self.kl_weight, "kl_grad": self.kl_grad,
                "suffix": self.suffix, "variant": self.variant, "context": self.context, "locate": self.locate,
                "layer": self.layer, "fast": self.fast, "max_prompt_tokens": self.max_prompt_tokens}

    def format_input(self, text: str):
        return with_suffix(text, self.suffix)

    def toxic_layer(self, model, tokenizer, record: dict) -> int:
        if self.layer is not None:
            return self.layer
        if self.locate == "first" and self._first_layer is not None:
            return self._first_layer
        layer = locate_toxic_layer(model, tokenizer, record, variant=self.variant, context=self.context,
                                   max_tokens=self.locate_max_tokens)
        if self._first_layer is None:
            self._first_layer = layer
        return layer

    def resumed(self, info: dict) -> None:
        if self._first_layer is None and info.get("toxic_layer") is not None:
            self._first_layer = int(info["toxic_layer"])

    def edit(self, model, tokenizer, record: dict) -> dict:
        if self._session is not None:
            raise RuntimeError("DINM.edit called twice without restore(); restore the previous edit first")
        t0 = time.perf_counter()
        layer = self.toxic_layer(model, tokenizer, record)
        locate_seconds = time.perf_counter() - t0
        lr = self.lr if self.lr is not None else default_lr(model)
        # with λ = 0 the constraint is only measured (KL after the edit), when the record has one
        use_kl = self.kl_weight > 0 or _has_constraint(record)
        session = DINMSession(model, tokenizer, record, layer, fast=self.fast, suffix=self.suffix,
                              use_kl=use_kl, max_prompt_tokens=self.max_prompt_tokens,
                              max_target_tokens=self.max_target_tokens, max_kc_tokens=self.max_kc_tokens)
        try:
            history = session.run(steps=self.steps, lr=lr, kl_weight=self.kl_weight, kl_grad=self.kl_grad,
                                  weight_decay=self.weight_decay, stop_loss=self.stop_loss)
        except BaseException:
            session.restore()
            raise
        self._session = session
        return {
            "toxic_layer": int(layer),
            "edited_module": session.module_name,
            "lr": lr,
            "steps_run": len(history["loss"]),
            "loss": history["loss"],
            "nll": history["nll"],
            "kl": history["kl"],
            "nll_after": history.get("nll_after"),
            "kl_after": history.get("kl_after"),
            "delta_norm": session.delta_norm(),
            "truncated": any(session.inputs.truncated.values()),
            "locate_seconds": locate_seconds,
        }

    def restore(self, model) -> None:
        if self._session is not None:
            self._session.restore()
            self._session = None


# ----------------------------------------------------------------------------------------------------
# Sweep (chapter 04): python -m helpers.dinm sweep
# ----------------------------------------------------------------------------------------------------
#: The centre of chapter 04's sweep: DINM as published (10 steps, λ = 10, the suffix on).
SWEEP_BASE = {"steps": 10, "lr": 1e-3, "kl_weight": 10.0, "kl_grad": True, "suffix": True}


def sweep_configs(kind: str = "small") -> list[dict]:
    """One-factor-at-a-time grid around :data:`SWEEP_BASE`: steps, learning rate, KL weight, suffix, KL gradient."""
    if kind == "none":
        return []
    base = dict(SWEEP_BASE)
    grid = [dict(base)]
    for steps in (5, 20):
        grid.append({**base, "steps": steps})
    for lr in (5e-4, 2e-3, 5e-3):
        grid.append({**base, "lr": lr})
    for kl_weight in (0.0, 1.0):
        grid.append({**base, "kl_weight": kl_weight})
    grid.append({**base, "suffix": False})  # the paper's ablation: without the suffix system prompt
    # the ablation: the reference's no-grad KL (then λ only scales the printed loss, not the update)
    grid.append({**base, "kl_grad": False})
    if kind == "tiny":
        return grid[:3]
    return grid


def parse_sweep_config(text: str) -> dict:
    """``'{"lr": 5e-3, "kl_weight": 10}'`` → :data:`SWEEP_BASE` with those keys replaced; unknown keys or
    non-JSON text raise ``SystemExit`` naming the option."""
    import json

    try:
        extra = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--config {text!r} is not JSON: {err.msg}") from err
    if not isinstance(extra, dict):
        raise SystemExit(f"--config {text!r} must be a JSON object like {{\"lr\": 0.005}}")
    unknown = sorted(set(extra) - set(SWEEP_BASE))
    if unknown:
        raise SystemExit(f"--config {text!r}: unknown keys {unknown}; known: {sorted(SWEEP_BASE)}")
    return {**SWEEP_BASE, **extra}


def config_key(config: dict) -> str:
    return ",".join(f"{k}={config[k]}" for k in sorted(config))


def run_sweep(model, tokenizer, records: Sequence[dict], judge, configs: Sequence[dict], *, log_path,
              max_new_tokens: int = 32, max_prompt_tokens: int = 1024, general: Sequence[str] = (),
              general_limit=None, vanilla: bool = True, progress: bool = True, also_judge=None,
              allow_judge_overlap: bool = False) -> list[dict]:
    """Evaluate DINM for each config (and vanilla, with and without the suffix) with the harness.

    Edit inputs and evaluation inputs both keep their last ``max_prompt_tokens`` tokens.

    Each finished config is appended to the :class:`helpers.io.RunLog` at ``log_path`` (with every response, so
    the rows can be re-judged later by :func:`rejudge`) and skipped when the sweep runs again with the same
    model, records, token limits, judges and general metrics (the log's settings hash; rows of other settings
    stay in the file but are never reused). ``general``:
    general-performance metrics (``"kqa"``, ``"csum"``) measured after the first edit (vanilla: once), on
    ``general_limit`` items (see :func:`helpers.metrics.general_performance`). ``vanilla=False`` skips the
    two vanilla rows (e.g. when another process of the same sweep runs them).
    Returns all rows of the log: ``{"key", "method", "config", "aggregate", "instances", ...}``.
    """
    from pathlib import Path

    from tqdm.auto import tqdm

    from .harness import VanillaMethod, evaluate_safeedit, general_from_spec
    from .io import RunLog, settings_hash

    def name_of(j):
        return None if j is None else j if isinstance(j, str) else getattr(j, "name", type(j).__name__)

    general = [g for g in (general.split(",") if isinstance(general, str) else general) if g.strip()]
    log = RunLog.open(Path(log_path), {
        "model": getattr(model, "name_or_path_for_course", None) or getattr(getattr(model, "config", None),
                                                                            "_name_or_path", ""),
        "records": settings_hash(list(records)), "max_new_tokens": max_new_tokens,
        "max_prompt_tokens": max_prompt_tokens, "judge": name_of(judge), "second_judge": name_of(also_judge),
        "general": sorted(g.strip().lower() for g in general if g.strip()), "general_limit": general_limit})
    done = log.done()
    ids = ",".join(str(r.get("id")) for r in records)

    def job_key(method_name: str, config: dict) -> str:
        return f"{method_name}:{config_key(config)}|records={ids}|tokens={max_prompt_tokens}/{max_new_tokens}"

    general_fn = general_from_spec(general, general_limit)
    jobs = [("vanilla", {"suffix": False}), ("vanilla", {"suffix": True})] if vanilla else []
    jobs += [("dinm", dict(c)) for c in configs]
    for method_name, config in tqdm(jobs, desc="sweep", disable=not progress):
        key = job_key(method_name, config)
        if key in done:
            continue
        if method_name == "vanilla":
            method = VanillaMethod()
            suffix = _suffix(config["suffix"])
            method.format_input = lambda text, s=suffix: with_suffix(text, s)  # type: ignore[method-assign]
        else:
            method = DINM(max_prompt_tokens=max_prompt_tokens, **config)
        t0 = time.perf_counter()
        result = evaluate_safeedit(method, records, judge, model, tokenizer, max_new_tokens=max_new_tokens,
                                   max_input_tokens=max_prompt_tokens, general=general_fn, progress=False,
                                   also_judge=also_judge, allow_judge_overlap=allow_judge_overlap)
        keep = ("id", "responses", "labels", "toxic_layer", "loss", "nll", "kl", "nll_after", "kl_after",
                "delta_norm", "edit_seconds")
        row = {"method": method_name, "config": config, "judge": result["judge"],
               "aggregate": result["aggregate"], "by_judge": result["by_judge"],
               "judges_info": result["judges_info"], "max_new_tokens": max_new_tokens,
               "max_prompt_tokens": max_prompt_tokens, "seconds": time.perf_counter() - t0,
               "mean_edit_seconds": result["timings"].get("mean_edit_seconds"),
               "instances": [{k: inst[k] for k in keep if k in inst} for inst in result["instances"]]}
        done[key] = log.append(row, key=key)
    return [done[k] for k in dict.fromkeys(job_key(m, c) for m, c in jobs) if k in done]


def rejudge(rows: Sequence[dict], judge) -> list[dict]:
    """Recompute DS/DG of sweep rows from their stored responses with another ``judge`` (name or Judge), and
    fluency as the reference computes it (:func:`helpers.metrics.record_fluency`: all five responses of a
    record), so rows saved by an older version read the same as new ones.

    General-performance numbers do not depend on the judge and are kept.
    """
    from .judge import get_judge
    from .metrics import METRIC_KEYS, aggregate_safety, record_fluency

    judge = get_judge(judge) if isinstance(judge, str) else judge
    out = []
    for row in rows:
        texts = [inst["responses"][k] for inst in row["instances"] for k in METRIC_KEYS]
        labels = judge.predict(texts)
        by_key = {k: labels[i::len(METRIC_KEYS)] for i, k in enumerate(METRIC_KEYS)}
        aggregate = {**row["aggregate"], **aggregate_safety(by_key),
                     "fluency": record_fluency([inst["responses"] for inst in row["instances"]])}
        out.append({**row, "judge": judge.name, "aggregate": aggregate})
    return out


def _main(argv: Sequence[str] | None = None) -> int:
    import json
    import sys

    from .cli import ArgumentParser, at_least, check_model_name, check_output_file, require_records
    from .config import results_dir, set_seed
    from .data import load_safeedit
    from .harness import add_judge_arguments, general_from_spec, judges_from_args, parse_general_limit
    from .io import atomic_write_json
    from .models import load_model
    from .results import hardware

    parser = ArgumentParser(prog="python -m helpers.dinm", description="DINM hyper-parameter sweep")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", help="one-factor-at-a-time sweep of steps, lr, KL weight, suffix, KL gradient")
    p.add_argument("--data", default="built")
    p.add_argument("--split", default="validation",
                   help="default: validation — hyper-parameters are tuned on validation, reported on test")
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--model", default=None)
    add_judge_arguments(p)
    p.add_argument("--grid", default="small", choices=["small", "tiny", "none"],
                   help="the built-in one-factor grid ('none': only the --config rows)")
    p.add_argument("--config", action="append", default=[], metavar="JSON",
                   help='an extra configuration over the base, e.g. \'{"lr": 5e-3, "kl_weight": 10}\' (repeatable)')
    p.add_argument("--no-vanilla", action="store_true", help="skip the two vanilla rows")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-prompt-tokens", type=int, default=1024)
    p.add_argument("--general", default="kqa,csum", help="general-performance metrics after the first edit ('' = none)")
    p.add_argument("--general-limit", default=None, help="items per general metric, e.g. kqa=300,csum=50")
    p.add_argument("--log", default=None, help="JSONL log (resumable); default results/dinm_sweep.jsonl")
    p.add_argument("--out", default=None, help="summary JSON; default results/dinm_sweep.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    # every argument is checked before any model loads and before anything is written
    at_least(args, 1, "limit", "max_new_tokens", "max_prompt_tokens", "threads")
    general_limit = parse_general_limit(args.general_limit)
    general_from_spec(args.general, general_limit)  # unknown metric names are refused here
    configs = sweep_configs(args.grid) + [parse_sweep_config(text) for text in args.config]
    if not configs and args.no_vanilla:
        raise SystemExit("nothing to run: --grid none, no --config and --no-vanilla")
    for flag, path in (("--log", args.log), ("--out", args.out)):
        if path is not None:
            check_output_file(path, flag)
    check_model_name(args.model)
    set_seed(args.seed)
    records = require_records(load_safeedit(args.data, split=args.split, limit=args.limit), args.data)
    judge, second_judge = judges_from_args(args, records, source=str(args.data))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    log = args.log or results_dir() / "dinm_sweep.jsonl"
    model, tokenizer = load_model(args.model)
    rows = run_sweep(model, tokenizer, records, judge, configs, log_path=log,
                     max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
                     general=[g for g in args.general.split(",") if g.strip()], general_limit=general_limit,
                     vanilla=not args.no_vanilla, also_judge=second_judge,
                     allow_judge_overlap=args.allow_judge_overlap)
    import datetime

    summary = {"date": datetime.date.today().isoformat(), "data": args.data, "split": args.split, "limit": args.limit, "model": args.model or "smollm2-135m-instruct",
               "judge": judge.name, "hardware": hardware(), "max_new_tokens": args.max_new_tokens,
               "max_prompt_tokens": args.max_prompt_tokens, "general": args.general,
               "general_limit": args.general_limit, "dtype": str(next(model.parameters()).dtype),
               "command": "python -m helpers.dinm " + " ".join(argv if argv is not None else sys.argv[1:]),
               "rows": rows}
    out = args.out or results_dir() / "dinm_sweep.json"
    atomic_write_json(out, summary)
    print(json.dumps([(r["key"], r["aggregate"]) for r in rows], indent=1))
    print(f"wrote {out}")
    return 0


def main_sweep(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.dinm …`` with bad input as one line ``error: …`` and exit status 2."""
    from .cli import run_guarded

    return run_guarded(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main_sweep())
