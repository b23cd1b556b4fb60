"""DINM's fast path: everything below the edited W_V is computed once, without gradients.

Only W_V of the toxic layer changes during an edit, so the input of that layer's MLP, the residual stream
around it, the masks and the rotary embeddings are the same at every step. :class:`UpperForward` caches them
and runs, per step, W_V, the layers above it and the LM head at the positions the loss reads;
:class:`FullForward` is the plain whole-model pass it must agree with.
"""
from __future__ import annotations

from .locate import decoder_layers, module_names, wv_module


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
    """The straightforward way: a full forward pass, logits at every position, then the ones needed.

    ``model_kwargs`` (e.g. ``position_ids`` and a 4-D ``attention_mask`` for packed sequences) go to every pass."""

    def __init__(self, model, input_ids, positions, **model_kwargs):
        self.model, self.input_ids, self.positions, self.model_kwargs = model, input_ids, positions, model_kwargs

    def logits(self):
        out = self.model(input_ids=self.input_ids, use_cache=False, **self.model_kwargs)
        return out.logits[0, self.positions].float()


def _call_layer(layer, hidden, args, kwargs):
    out = layer(hidden, *args[1:], **kwargs) if args else layer(**{**kwargs, "hidden_states": hidden})
    return out[0] if isinstance(out, tuple) else out


class UpperForward:
    """The fast path: caches everything below W_V of ``layer`` once, then recomputes only what W_V changes.

    One no-grad pass records (with hooks) the keyword arguments of every layer from ``layer`` up, and
    either the input of W_V plus the residual stream around it (architectures whose layer output is
    ``residual + W_V(a)``) or the input of ``layer``. :meth:`logits` then runs W_V (or the whole ``layer``),
    the layers above it, and the final norm and LM head only at ``positions``. The same pass yields the
    original logits at ``positions`` (:attr:`reference_logits`). ``model_kwargs`` (packed sequences:
    ``position_ids`` and a 4-D ``attention_mask``) go to that pass; the layers' recorded arguments carry them.
    """

    def __init__(self, model, input_ids, layer: int, positions, **model_kwargs):
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
                hidden = model.base_model(input_ids=input_ids, use_cache=False, **model_kwargs).last_hidden_state
                self.reference_logits = _head(model, hidden[0, positions], norm=False)
        finally:
            for handle in handles:
                handle.remove()
        missing = [i for i in range(layer, len(self.layers)) if i not in calls]
        if missing:
            raise RuntimeError(f"fast path: layers {missing} were not called by the model's forward pass")
        # under autocast the cached activations come out in bf16: keep them in the weights' dtype, so the
        # engine also runs outside autocast (autocast casts them back down where it is on)
        dtype = self.wv.weight.dtype
        self.calls = {}
        for i, (args, kwargs) in calls.items():
            # keep the hidden-state input only where it is needed (``layer`` without the residual shortcut)
            keep = i == layer and not self.residual
            if keep and args:
                args = (args[0].to(dtype),) + tuple(args[1:])
            elif keep:
                kwargs = {**kwargs, "hidden_states": kwargs["hidden_states"].to(dtype)}
            self.calls[i] = (args if keep or not args else (None,) + tuple(args[1:]), kwargs)
        if self.residual:
            self.a = cache["a"].to(dtype)
            self.base = (cache["out"].to(dtype) - cache["o"].to(dtype))  # the residual stream around W_V

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
