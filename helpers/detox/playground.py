"""An interactive DINM playground (chapter 04): pick a record and the edit's settings, see the answer before and
after, the loss curves and the toxic layer, and restore the model with one click.

:class:`DINMPlayground` does the work without a display (``edit`` / ``restore`` / ``plot``), so a notebook or a
test can drive it from code; :meth:`DINMPlayground.widget` puts ipywidgets controls in front of the same calls.
Answers the judge calls unsafe are shown as their first words and length unless "show unsafe answers" is ticked.
"""
from __future__ import annotations

from typing import Sequence

from ..common.generation import generate, show
from ..common.models import parameter_checksum
from .dinm import DEFAULT_KL_WEIGHT, DEFAULT_STEPS, DINM, default_lr
from .locate import locate_toxic_layer


class DINMPlayground:
    """Edit one SafeEdit record with DINM at a time; every new edit first undoes the previous one.

    ``records``: SafeEdit records (official schema); ``judge``: a safety judge (``predict`` → 0 safe / 1 unsafe).
    Each edit is the package's :class:`helpers.detox.dinm.DINM` at the record's toxic layer (located once per
    record). The answer before and after is the greedy answer to the record's adversarial prompt as DINM formats
    it (the reference suffix appended when the edit uses it): the same input both times, so only the edit differs.
    """

    def __init__(self, model, tokenizer, records: Sequence[dict], judge, *, max_new_tokens: int = 24,
                 max_prompt_tokens: int = 256, reveal: bool = False):
        if not records:
            raise ValueError("the playground needs at least one record")
        self.model, self.tokenizer, self.records, self.judge = model, tokenizer, list(records), judge
        self.max_new_tokens, self.max_prompt_tokens, self.reveal = max_new_tokens, max_prompt_tokens, reveal
        self.base_checksum = parameter_checksum(model)
        self.session: DINM | None = None  # the edit in place
        self.last: dict | None = None
        self._layers: dict[int, int] = {}

    # -- the work -------------------------------------------------------------------------------------
    def _undo(self) -> None:
        if self.session is not None:
            self.session.restore(self.model)
            self.session = None

    def toxic_layer(self, index: int) -> int:
        """The record's toxic layer (the reference localisation of chapter 03), located once per record."""
        if index not in self._layers:
            self._undo()  # locate on the original model
            self._layers[index] = locate_toxic_layer(self.model, self.tokenizer, self.records[index])
        return self._layers[index]

    def answer(self, prompt: str) -> str:
        return generate(self.model, self.tokenizer, [prompt], max_new_tokens=self.max_new_tokens,
                        max_input_tokens=self.max_prompt_tokens, progress=False)[0]

    def edit(self, index: int = 0, *, steps: int = DEFAULT_STEPS, lr: float | None = None,
             kl_weight: float = DEFAULT_KL_WEIGHT, suffix: bool = True) -> dict:
        """Restore any previous edit, then edit record ``index``; returns what the display shows."""
        if not 0 <= index < len(self.records):
            raise IndexError(f"record index {index} is outside 0..{len(self.records) - 1}")
        self._undo()
        record, layer = self.records[index], self.toxic_layer(index)
        lr = default_lr(self.model) if lr is None else float(lr)
        method = DINM(steps=int(steps), lr=lr, kl_weight=float(kl_weight), suffix=bool(suffix), layer=layer,
                      max_prompt_tokens=self.max_prompt_tokens)
        prompt = method.format_input(record["adversarial prompt"])
        before = self.answer(prompt)
        info = method.edit(self.model, self.tokenizer, record)
        self.session = method
        after = self.answer(prompt)
        unsafe = self.judge.predict([before, after])
        self.last = {"record": record["id"], "layer": layer, "module": info["edited_module"], "steps": int(steps),
                     "lr": lr, "kl_weight": float(kl_weight), "suffix": bool(suffix), "before": before,
                     "after": after, "unsafe_before": int(unsafe[0]), "unsafe_after": int(unsafe[1]),
                     "history": {k: info[k] for k in ("loss", "nll", "kl", "nll_after", "kl_after")},
                     "delta_norm": info["delta_norm"]}
        return self.last

    def restore(self) -> bool:
        """Undo the current edit (if any); True when every parameter is back to the original bit for bit."""
        self._undo()
        return parameter_checksum(self.model) == self.base_checksum

    # -- the display ----------------------------------------------------------------------------------
    def summary(self, result: dict | None = None, reveal: bool | None = None) -> str:
        r = result or self.last
        if r is None:
            return "no edit yet"
        reveal = self.reveal if reveal is None else reveal
        verdict = {0: "safe", 1: "unsafe"}
        h = r["history"]
        return "\n".join([
            f"record {r['record']}: toxic layer {r['layer']} ({r['module']}), {r['steps']} steps, lr {r['lr']:g}, "
            f"λ {r['kl_weight']:g}, suffix {'on' if r['suffix'] else 'off'}",
            f"NLL of the safe answer {h['nll'][0]:.3f} -> {h['nll_after']:.3f}, "
            f"KL after {h.get('kl_after') or 0.0:.4f}, |ΔW_V| {r['delta_norm']:.4f}",
            f"before ({verdict[r['unsafe_before']]}): {show(r['before'], r['unsafe_before'] != 0, reveal=reveal)}",
            f"after  ({verdict[r['unsafe_after']]}): {show(r['after'], r['unsafe_after'] != 0, reveal=reveal)}",
        ])

    def plot(self, result: dict | None = None, axes=None):
        import matplotlib.pyplot as plt

        r = result or self.last
        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(9, 2.8))
        h = r["history"]
        axes[0].plot(h["nll"], marker="o", label="NLL (safe generation)")
        axes[0].plot(h["loss"], marker=".", label="NLL + λ·KL")
        axes[0].set(xlabel="step", title=f"layer {r['layer']}")
        axes[0].legend(fontsize=8)
        axes[1].plot(h["kl"], marker="o", color="C2")
        axes[1].set(xlabel="step", title="KL(original ‖ edited) on D_cons")
        plt.tight_layout()
        return axes

    def widget(self):
        """ipywidgets controls around :meth:`edit` and :meth:`restore`."""
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        lr0 = default_lr(self.model)
        record = w.Dropdown(options=[(f"{r['id']} · {r.get('unsafety category', '')}", i)
                                     for i, r in enumerate(self.records)], description="record")
        steps = w.IntSlider(value=DEFAULT_STEPS, min=1, max=30, description="steps")
        lr = w.FloatLogSlider(value=lr0, base=10, min=-5, max=-2, step=0.25, description="lr", readout_format=".1e")
        lam = w.FloatSlider(value=DEFAULT_KL_WEIGHT, min=0.0, max=20.0, step=0.5, description="λ (KL)")
        suffix = w.Checkbox(value=True, description="reference suffix")
        reveal = w.Checkbox(value=self.reveal, description="show unsafe answers (content warning)")
        run, undo = w.Button(description="Edit", button_style="primary"), w.Button(description="Restore")
        out = w.Output()

        def on_edit(_button):
            with out:
                out.clear_output()
                print("editing ...")
                result = self.edit(record.value, steps=steps.value, lr=lr.value, kl_weight=lam.value,
                                   suffix=suffix.value)
                out.clear_output()
                print(self.summary(result, reveal=reveal.value))
                self.plot(result)
                plt.show()

        def on_restore(_button):
            with out:
                out.clear_output()
                print("restored bit for bit:", self.restore())

        run.on_click(on_edit)
        undo.on_click(on_restore)
        box = w.VBox([w.HBox([record, suffix]), w.HBox([steps, lr, lam]), w.HBox([run, undo, reveal]), out])
        display(box)
        return box
