"""DINM — Detoxifying with Intraoperative Neural Monitoring (chapter 04).

For one SafeEdit record DINM

1. locates the **toxic layer** (:mod:`helpers.detox.locate`: the layer where the hidden states of the safe and the
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

**Precision and memory.** Each step runs one backward per loss term, right after that term's forward (the
same gradient as that of ``NLL + λ·KL``, with only one sequence's activations alive at a time). On a CPU
with native bf16 (``dtype="auto"``) the products run under bf16 autocast with W_V and Adam's state in
float32, and the frozen weights above the edit are cast to bf16 once per edit (:meth:`DINMSession.frozen_in_bf16`)
rather than by autocast in every call. A model held in bf16/fp16 (a GPU, or ``HELPERS_DTYPE=bfloat16``) is
edited through a float32 master copy of W_V, written back rounded once; that is the low-memory way to edit
(half the model's weight memory), at the price of bf16 generations in the evaluation.

``python -m helpers safeedit-eval --method dinm`` evaluates DINM with the defaults below;
``python -m helpers dinm-sweep`` runs the hyper-parameter sweep of chapter 04.
"""
from __future__ import annotations

import contextlib
import time

from ..common.models import compute_autocast, cpu_autocast_dtype, precision
from ..safeedit.harness import Method
from .edit_inputs import EditInputs, _suffix, build_edit_inputs, with_suffix
from .fast_path import FullForward, UpperForward
from .locate import decoder_layers, locate_toxic_layer, module_names, wv_module, wv_module_name

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
    from ..common.models import EMBEDDED_ALIASES, EMBEDDED_NAME

    if name in EMBEDDED_ALIASES:
        name = EMBEDDED_NAME
    if name in DEFAULT_LR:
        return DEFAULT_LR[name]
    kind = getattr(model.config, "model_type", None)
    return DEFAULT_LR.get(kind, FALLBACK_LR)


# ----------------------------------------------------------------------------------------------------
# One edit
# ----------------------------------------------------------------------------------------------------
class DINMSession:
    """Everything for editing one record at one layer; :meth:`run` edits, :meth:`restore` undoes it exactly.

    The original W_V is cloned at construction. ``fast`` picks :class:`UpperForward` or :class:`FullForward`.
    ``autocast``: ``None`` = the default precision (:func:`helpers.common.models.compute_autocast`: bf16
    autocast on a CPU with native bf16, W_V and Adam's state in float32), ``False`` = float32 throughout
    (a model held in bf16/fp16 always trains a float32 master W_V under autocast in its own dtype).
    ``cast_once``: under CPU bf16 autocast, cast the frozen weights to bf16 once per :meth:`run` (same losses).
    ``pack``: run the edit and constraint sequences as one packed row (one forward and one backward per step,
    block-diagonal mask; same losses) instead of one after the other (the default: each backward right after its
    forward, so only one sequence's activations are alive — less memory; see ``benchmarks/bench_dinm.py --pack``).
    """

    def __init__(self, model, tokenizer, record: dict, layer: int, *, fast: bool = True, suffix: str | None = None,
                 use_kl: bool = True, max_prompt_tokens: int = 1024, max_target_tokens: int = 256,
                 max_kc_tokens: int = 256, source: str = "<records>", autocast: bool | None = None,
                 cast_once: bool = True, pack: bool = False):
        import torch

        self.model, self.layer, self.fast, self.use_kl = model, layer, fast, use_kl
        self.pack = pack and use_kl  # without the constraint there is only one sequence
        self.module_name = wv_module_name(model, layer)
        self.param = wv_module(model, layer).weight
        self.inputs = build_edit_inputs(tokenizer, record, suffix=suffix, max_prompt_tokens=max_prompt_tokens,
                                        max_target_tokens=max_target_tokens, max_kc_tokens=max_kc_tokens,
                                        with_kc=use_kl, source=source)
        # a model held in bf16/fp16 (a GPU, or HELPERS_DTYPE=bfloat16 on a CPU): Adam steps this small would
        # mostly be rounded away in half precision, so the edit trains a float32 master copy of W_V under
        # autocast and writes it back, rounded once, when :meth:`run` ends (``master``)
        self.master = self.param.dtype in (torch.float16, torch.bfloat16)
        self.original = self.param.detach().clone()
        device = self.param.device
        if self.master:
            half = self.param.dtype
            self.mixed = lambda: torch.autocast(device.type, dtype=half)
            self.precision = f"{str(half).replace('torch.', '')} weights, float32 W_V"
        else:
            # bf16 products on a CPU with native bf16 (float32 W_V and Adam state), plain float32 elsewhere or
            # with HELPERS_DTYPE=float32; the reference distribution and every step use the same precision
            # (``autocast=False``: float32 whatever the default, e.g. to compare with a float32 loop by hand)
            self.mixed = (lambda: compute_autocast(device)) if autocast is not False else contextlib.nullcontext
            self.precision = precision(str(device)) if autocast is not False else "float32"
        # under CPU bf16 autocast the frozen weights of the steps are cast to bf16 once per run (see
        # :meth:`frozen_in_bf16`) instead of by autocast in every call
        self.cast_once = (cast_once and not self.master and autocast is not False and device.type == "cpu"
                          and cpu_autocast_dtype() is not None)
        with self.mixed():
            self._build_engines(model, device)

    def _build_engines(self, model, device) -> None:
        """The forward engines of the edit and constraint sequences and the original model's distribution."""
        import torch

        fast, layer, use_kl = self.fast, self.layer, self.use_kl
        self.targets = torch.tensor(self.inputs.target_ids, device=device)
        if self.pack:
            attn = getattr(model.config, "_attn_implementation", None) or "eager"
            ids, kwargs, positions, self.n_edit = self.inputs.packed(attn)
            ids, positions = ids.to(device), positions.to(device)
            kwargs = {k: v.to(device) for k, v in kwargs.items()}
            if fast:
                self.edit_engine = UpperForward(model, ids, layer, positions, **kwargs)
                reference = self.edit_engine.reference_logits[self.n_edit:]
            else:
                self.edit_engine = FullForward(model, ids, positions, **kwargs)
                with torch.no_grad():
                    reference = self.edit_engine.logits()[self.n_edit:]
            self.ref_logp = torch.log_softmax(reference, dim=-1)
            self.ref_p = self.ref_logp.exp()
            return
        ids, positions = EditInputs.sequence(self.inputs.prompt_ids, self.inputs.target_ids)
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
    def _kl_from(self, logits):
        import torch

        logp = torch.log_softmax(logits, dim=-1)
        return (self.ref_p * (self.ref_logp - logp)).sum(-1).mean()

    def packed_terms(self, kl_grad: bool = True):
        """``(nll, kl)`` from one forward pass of the packed row (``pack=True``); ``kl_grad=False`` detaches the
        constraint's logits, so the KL carries no gradient (as in the reference implementation)."""
        import torch.nn.functional as F

        with self.mixed():
            edit, kc = self.edit_engine.logits().split([self.n_edit, len(self.ref_p)])
            return F.cross_entropy(edit, self.targets), self._kl_from(kc if kl_grad else kc.detach())

    def nll(self):
        """Mean negative log-likelihood of the safe generation given the adversarial input."""
        import torch.nn.functional as F

        if self.pack:
            return self.packed_terms()[0]
        with self.mixed():
            return F.cross_entropy(self.edit_engine.logits(), self.targets)

    def kl(self, grad: bool = True):
        """KL(original ‖ edited) on the knowledge-constraint answer, mean over its tokens.

        ``grad=False`` computes the edited logits under ``no_grad``, as the reference implementation does.
        """
        import torch

        if not self.use_kl:
            raise RuntimeError("this session was built with use_kl=False")
        with contextlib.nullcontext() if grad else torch.no_grad():
            if self.pack:
                return self.packed_terms()[1]
            with self.mixed():
                return self._kl_from(self.kc_engine.logits())

    @contextlib.contextmanager
    def trainable(self):
        """Inside: W_V of the layer is the only parameter that requires grad, the model is in eval mode.

        Yields the tensor the optimiser updates: W_V itself, or (a half-precision model) a float32 master
        copy that takes W_V's place in the module and is written back, rounded to the model's dtype, on exit.
        """
        import torch

        params = list(self.model.parameters())
        flags = [p.requires_grad for p in params]
        was_training = self.model.training
        module = wv_module(self.model, self.layer)
        self.model.eval()
        try:
            for p in params:
                p.requires_grad_(False)
            if self.master:
                trained = torch.nn.Parameter(self.param.detach().float())
                module.weight = trained
            else:
                trained = self.param
                trained.requires_grad_(True)
            yield trained
        finally:
            if self.master:
                with torch.no_grad():
                    self.param.copy_(module.weight.detach())
                module.weight = self.param
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
            self.param.grad = None
            self.model.train(was_training)

    @contextlib.contextmanager
    def frozen_in_bf16(self):
        """Under CPU bf16 autocast (``cast_once``): inside, the frozen ``nn.Linear`` weights a step multiplies by
        (every one from the edited layer up except W_V, and the LM head) are bf16 copies, made once.

        Autocast would cast each of them from float32 at every call — for both sequences' forwards, every step.
        The copies round exactly as autocast does, so the losses are the same; the float32 weights are not
        touched and are put back on exit."""
        import torch

        if not self.cast_once:
            yield
            return
        wv = wv_module(self.model, self.layer)
        modules = [m for block in decoder_layers(self.model)[self.layer:] for m in block.modules()]
        modules.append(self.model.get_submodule(module_names(self.model)["lm_head"]))
        swapped = []
        try:
            for m in modules:
                if isinstance(m, torch.nn.Linear) and m is not wv and m.weight.dtype == torch.float32:
                    swapped.append((m, m.weight))
                    m.weight = torch.nn.Parameter(m.weight.detach().to(torch.bfloat16), requires_grad=False)
            yield
        finally:
            for m, weight in swapped:
                m.weight = weight

    def run(self, *, steps: int = DEFAULT_STEPS, lr: float = 5e-4, kl_weight: float = DEFAULT_KL_WEIGHT,
            kl_grad: bool = True, weight_decay: float = 0.0, stop_loss: float = 1e-4, final: bool = True) -> dict:
        """Edit W_V with Adam; returns the per-step ``loss``/``nll``/``kl`` (before each update), timings and,
        with ``final``, ``nll_after``/``kl_after`` (after the last update)."""
        import torch

        if steps < 0:
            raise ValueError("steps must be >= 0")
        use_kl = self.use_kl and kl_weight > 0
        history = {"loss": [], "nll": [], "kl": [], "step_seconds": []}
        with self.frozen_in_bf16():
            with self.trainable() as param:
                optimizer = torch.optim.Adam([param], lr=lr, weight_decay=weight_decay)
                for _ in range(steps):
                    t0 = time.perf_counter()
                    optimizer.zero_grad(set_to_none=True)
                    if self.pack:  # one forward of both sequences, one backward of nll + λ·kl
                        nll, kl = self.packed_terms(kl_grad=kl_grad)
                        (nll + kl_weight * kl if use_kl else nll).backward()
                        kl = kl.detach() if use_kl else torch.zeros((), device=nll.device)
                    else:
                        # one backward per term, each right after its forward: the gradient is the same as that
                        # of nll + λ·kl, but only one sequence's activations are alive at a time (less memory)
                        nll = self.nll()
                        if nll.requires_grad:
                            nll.backward()
                        kl = torch.zeros((), device=nll.device)
                        if use_kl:
                            kl = self.kl(grad=kl_grad)
                            if kl.requires_grad:
                                (kl_weight * kl).backward()
                    loss = float(nll.item()) + kl_weight * float(kl.item())
                    history["loss"].append(loss)
                    history["nll"].append(float(nll.item()))
                    history["kl"].append(float(kl.item()))
                    if loss < stop_loss:
                        history["step_seconds"].append(time.perf_counter() - t0)
                        break
                    optimizer.step()
                    history["step_seconds"].append(time.perf_counter() - t0)
            if final:
                with torch.no_grad(), self.mixed():  # packed: one forward gives both
                    terms = self.packed_terms() if self.pack else (self.nll(), self.kl(False) if self.use_kl else None)
                    history["nll_after"] = float(terms[0].item())
                    if self.use_kl:
                        history["kl_after"] = float(terms[1].item())
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
    """DINM as a per-instance :class:`helpers.safeedit.harness.Method`.

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
        # reusing the first record's layer makes every edit depend on record 0: one process does them in order
        self.shardable = locate == "per_instance" or layer is not None

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
