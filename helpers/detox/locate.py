"""Locate the *toxic layer* of a SafeEdit record (chapter 03).

DINM edits one layer per record: the layer where the model's hidden states for the record's **safe** and
**unsafe** generation are furthest apart. For each record we run the model once on the two generations
(a batch of two), take the hidden state after every decoder layer, and measure a per-layer distance:

* ``"reference"`` — what the reference implementation (EasyEdit ``SafetyEditor._locate_toxic_layer``)
  does: the L2 (Frobenius) norm of the difference of the two ``[tokens, hidden]`` matrices, *over the whole
  padded sequence* (pad positions included, tokens compared position by position);
* ``"last"`` — the L2 distance between the hidden states of the last real token of each generation;
* ``"mean"`` — the L2 distance between the mean-pooled hidden states (pad positions excluded).

The toxic layer is the argmax over layers (the first one on ties, like the reference's strict ``>``).
As in the reference, "the hidden state after layer *i*" is ``outputs.hidden_states[i + 1]`` of a Hugging
Face model, so the last entry is taken *after* the final norm.

By default the generations are fed alone (``context="none"``, as the reference does);
``context="prompt"`` prefixes both with the record's adversarial prompt (chat template), so the distance is
measured on the answer *to that input*.

The reference locates the layer for the **first** record only and reuses it for every later record
(``if len(hparams.layers) == 0``); :func:`reused_first_layer` reproduces that, the rest of this module
locates per instance.

:data:`MODULE_NAMES` maps each supported architecture to its module paths in one place; :func:`wv_module`
returns the edit target W_V (the MLP output matrix) of layer *i* for any supported model.
"""
from __future__ import annotations

from typing import Sequence

#: Module paths per ``config.model_type``: the decoder-layer list, W_V inside a layer (the MLP output
#: projection, DINM's edit target), the final norm and the LM head. ``mlp_residual``: a layer's output is
#: ``residual + W_V(a)`` (no norm after the MLP), which lets the DINM fast path skip recomputing the layer.
MODULE_NAMES: dict[str, dict] = {
    "llama": {"layers": "model.layers", "w_v": "mlp.down_proj", "norm": "model.norm", "lm_head": "lm_head",
              "mlp_residual": True},
    "mistral": {"layers": "model.layers", "w_v": "mlp.down_proj", "norm": "model.norm", "lm_head": "lm_head",
                "mlp_residual": True},
    "qwen2": {"layers": "model.layers", "w_v": "mlp.down_proj", "norm": "model.norm", "lm_head": "lm_head",
              "mlp_residual": True},
    "gemma": {"layers": "model.layers", "w_v": "mlp.down_proj", "norm": "model.norm", "lm_head": "lm_head",
              "mlp_residual": True},
    # Gemma 2 normalises the MLP output before adding it to the residual stream
    "gemma2": {"layers": "model.layers", "w_v": "mlp.down_proj", "norm": "model.norm", "lm_head": "lm_head",
               "mlp_residual": False},
    "gpt2": {"layers": "transformer.h", "w_v": "mlp.c_proj", "norm": "transformer.ln_f", "lm_head": "lm_head",
             "mlp_residual": True},
}

VARIANTS = ("reference", "last", "mean")
CONTEXTS = ("none", "prompt")


class UnsupportedModelError(ValueError):
    """A model whose architecture is not in :data:`MODULE_NAMES`."""


def module_names(model) -> dict:
    """The :data:`MODULE_NAMES` entry of ``model`` (by ``config.model_type``), or a clear error."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in MODULE_NAMES:
        raise UnsupportedModelError(
            f"model type {kind!r} is not mapped in helpers.detox.locate.MODULE_NAMES (supported: {sorted(MODULE_NAMES)}); "
            "add its decoder-layer list, MLP output projection, final norm and LM head there"
        )
    return MODULE_NAMES[kind]


def decoder_layers(model):
    """The list (``nn.ModuleList``) of decoder layers of ``model``."""
    return model.get_submodule(module_names(model)["layers"])


def num_layers(model) -> int:
    return len(decoder_layers(model))


def _check_layer(model, layer: int) -> int:
    n = num_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"layer must be an int in [0, {n}), got {layer!r}")
    return layer


def wv_module_name(model, layer: int) -> str:
    """The dotted name of W_V of ``layer``, e.g. ``model.layers.12.mlp.down_proj``."""
    names = module_names(model)
    return f"{names['layers']}.{_check_layer(model, layer)}.{names['w_v']}"


def wv_module(model, layer: int):
    """W_V (the MLP output projection) of decoder layer ``layer``: ``model.layers[i].mlp.down_proj`` for
    Llama/Mistral/Qwen2/Gemma, ``transformer.h[i].mlp.c_proj`` for GPT-2."""
    return model.get_submodule(wv_module_name(model, layer))


# ----------------------------------------------------------------------------------------------------
# Distances
# ----------------------------------------------------------------------------------------------------
def _last_positions(mask):
    """Index of the last real token of each row (works for left and right padding)."""
    import torch

    length = mask.shape[1]
    flipped = torch.flip(mask, dims=[1])
    return length - 1 - flipped.float().argmax(dim=1)


def distances_from_hidden(hidden_states: Sequence, attention_mask, variant: str = "reference"):
    """Per-layer distance between row 0 and row 1 of a batch of two.

    ``hidden_states``: the ``outputs.hidden_states`` tuple of a Hugging Face model (entry 0 = embeddings,
    entry ``i + 1`` = after layer ``i``), each ``[2, T, H]``; ``attention_mask``: ``[2, T]``.
    Returns a float tensor ``[n_layers]`` (entry ``i`` = layer ``i``).
    """
    import torch

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    hs = torch.stack([h.float() for h in hidden_states[1:]])  # [L, 2, T, H]
    if hs.dim() != 4 or hs.shape[1] != 2:
        raise ValueError(f"expected hidden states of shape [2, T, H] per layer, got {tuple(hs.shape[1:])}")
    if variant == "reference":
        return (hs[:, 0] - hs[:, 1]).flatten(1).norm(dim=1)
    mask = attention_mask.to(hs.device)
    if variant == "last":
        last = _last_positions(mask)
        a = hs[:, 0, last[0]]
        b = hs[:, 1, last[1]]
        return (a - b).norm(dim=-1)
    weights = mask.float()[None, :, :, None]  # [1, 2, T, 1]
    pooled = (hs * weights).sum(2) / weights.sum(2).clamp(min=1)  # [L, 2, H]
    return (pooled[:, 0] - pooled[:, 1]).norm(dim=-1)


def toxic_layer_from_distances(distances) -> int:
    """The argmax layer (first one on ties)."""
    import torch

    distances = torch.as_tensor(distances)
    if distances.dim() != 1 or distances.numel() == 0:
        raise ValueError("distances must be a non-empty 1-D sequence (one value per layer)")
    return int(torch.argmax(distances).item())


def _generation(record: dict, field: str, source: str) -> str:
    from ..safeedit.data import SafeEditFormatError

    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        state = "missing" if value is None else "empty" if isinstance(value, str) else f"a {type(value).__name__}"
        raise SafeEditFormatError(
            f"{source}: record id {record.get('id')}: field {field!r} is {state}; locating the toxic layer "
            "needs both the safe and the unsafe generation"
        )
    return value


def pair_inputs(tokenizer, record: dict, *, context: str = "none", max_tokens: int | None = None,
                max_prompt_tokens: int = 512, source: str = "<records>"):
    """Token ids and attention mask ``[2, T]`` for (safe, unsafe) generation of ``record``.

    Each generation is used whole (the reference cuts nothing), or keeps its first ``max_tokens`` tokens when
    that is given; with
    ``context="prompt"`` the chat-templated adversarial prompt (its last ``max_prompt_tokens`` tokens) comes
    first. Rows are padded on the tokenizer's padding side. Returns ``(input_ids, attention_mask, truncated)``.
    """
    import torch

    from ..common.generation import chat_prompt

    if context not in CONTEXTS:
        raise ValueError(f"unknown context {context!r}; choose one of {CONTEXTS}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("max_tokens must be at least 1 (or None: whole generations)")
    texts = [_generation(record, "safe generation", source), _generation(record, "unsafe generation", source)]
    prefix: list[int] = []
    if context == "prompt":
        prompt = record.get("adversarial prompt") or ""
        if not prompt.strip():
            raise _empty_prompt_error(record, source)
        prefix = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
    rows, truncated = [], False
    for text in texts:
        ids = tokenizer(text, add_special_tokens=context == "none")["input_ids"]
        if not ids:
            raise _generation_error(record, source)
        truncated |= max_tokens is not None and len(ids) > max_tokens
        rows.append(prefix + ids[:max_tokens])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    left = getattr(tokenizer, "padding_side", "left") == "left"
    ids = torch.full((2, width), pad, dtype=torch.long)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask, truncated


def _empty_prompt_error(record, source):
    from ..safeedit.data import SafeEditFormatError

    return SafeEditFormatError(f"{source}: record id {record.get('id')}: field 'adversarial prompt' is empty")


def _generation_error(record, source):
    from ..safeedit.data import SafeEditFormatError

    return SafeEditFormatError(f"{source}: record id {record.get('id')}: a generation tokenizes to nothing")


def record_distances(model, tokenizer, record: dict, *, variants: Sequence[str] = VARIANTS, context: str = "none",
                     max_tokens: int | None = None, max_prompt_tokens: int = 512, source: str = "<records>") -> dict:
    """``{variant: tensor[n_layers]}`` for one record, from a single forward pass (batch of two)."""
    import torch

    module_names(model)  # a clear error for unsupported architectures
    ids, mask, truncated = pair_inputs(tokenizer, record, context=context, max_tokens=max_tokens,
                                       max_prompt_tokens=max_prompt_tokens, source=source)
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                    use_cache=False)
    result = {v: distances_from_hidden(out.hidden_states, mask, v).cpu() for v in variants}
    result["truncated"] = truncated
    return result


def locate_toxic_layer(model, tokenizer, record: dict, *, variant: str = "reference", context: str = "none",
                       max_tokens: int | None = None) -> int:
    """The toxic layer (0-based decoder-layer index) of one record."""
    distances = record_distances(model, tokenizer, record, variants=[variant], context=context,
                                 max_tokens=max_tokens)
    return toxic_layer_from_distances(distances[variant])


def locate_records(model, tokenizer, records: Sequence[dict], *, variants: Sequence[str] = VARIANTS,
                   context: str = "none", max_tokens: int | None = None, max_prompt_tokens: int = 512,
                   progress: bool = True) -> dict:
    """Distances and toxic layers of many records (one forward pass each).

    Returns ``{"ids", "categories", "distances": {variant: ndarray[n_records, n_layers]},
    "layers": {variant: [int, ...]}, "truncated": [bool, ...]}``.
    """
    import numpy as np
    from tqdm.auto import tqdm

    records = list(records)
    rows = {v: [] for v in variants}
    truncated = []
    for record in tqdm(records, desc="locating", disable=not progress or len(records) < 2):
        d = record_distances(model, tokenizer, record, variants=variants, context=context, max_tokens=max_tokens,
                             max_prompt_tokens=max_prompt_tokens)
        for v in variants:
            rows[v].append(d[v].numpy())
        truncated.append(d["truncated"])
    distances = {v: np.stack(rows[v]) for v in variants}
    return {
        "ids": [r.get("id") for r in records],
        "categories": [r.get("unsafety category") for r in records],
        "distances": distances,
        "layers": {v: [int(i) for i in distances[v].argmax(axis=1)] for v in variants},
        "truncated": truncated,
    }


def reused_first_layer(layers: Sequence[int]) -> list[int]:
    """What the reference implementation edits: the first record's layer, reused for every record."""
    layers = list(layers)
    return [layers[0]] * len(layers) if layers else []


def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of records (0–1) on which two lists of layers agree."""
    a, b = list(a), list(b)
    if len(a) != len(b) or not a:
        raise ValueError("agreement needs two non-empty lists of the same length")
    return sum(x == y for x, y in zip(a, b)) / len(a)
