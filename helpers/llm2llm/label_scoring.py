"""Label-constrained prediction for the classification tasks.

:func:`score_labels` computes, for every label, the log-probability of the reply ``label + end-of-turn``
after the prompt (exactly the training format of :func:`helpers.common.training.encode_example`), sharing
one forward pass of the prompt across labels (KV cache). The prediction is the best-scoring label, so every
output is a valid label by construction.
"""
from __future__ import annotations

import difflib
import re
from typing import Sequence

from tqdm.auto import tqdm

from ..common.distributed import gather_shards, my_batches

CHOICE_LINE = re.compile(r"^\s*(?:\*\*)?holding\s*\(?([0-4])\)?(?:\*\*)?\s*[:.)]\s*(.+?)\s*$", re.I)
FIELD_LINE = re.compile(r"^\s*(?:[-*>]\s*)?(?:\*\*)?(text|label|context|answer|question|sentence|request)"
                        r"(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.*?)\s*$", re.I)
PLACEHOLDER = re.compile(r"<\s*(your|the|new|rephrased|text|example)[^>]*>", re.I)


def normalise_label(text: str | None, labels: Sequence[str]) -> str | None:
    """The label of ``labels`` that ``text`` names, or ``None``.

    Exact match first, then case-insensitive, then a label that appears as a whole word (``"NUM
    (numeric)"`` → ``NUM``, ``"Positive."`` → ``positive``); ambiguous text (two labels) gives ``None``.
    """
    if text is None:
        return None
    text = text.strip().strip("\"'`*.").strip()
    if text in labels:
        return text
    lowered = {label.lower(): label for label in labels}
    if text.lower() in lowered:
        return lowered[text.lower()]
    hits = {label for label in labels if re.search(rf"(?<![\w]){re.escape(label.lower())}(?![\w])", text.lower())}
    return hits.pop() if len(hits) == 1 else None


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _plain(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: ``"A gorgeous, witty"`` → ``"a gorgeous witty"``."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def similarity(a: str, b: str) -> float:
    """Word-level similarity in [0, 1] (difflib's ratio over lower-cased words, punctuation ignored)."""
    wa, wb = _plain(a).split(), _plain(b).split()
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()


# ----------------------------------------------------------------------------------------------------
# Label-constrained prediction
# ----------------------------------------------------------------------------------------------------
def score_labels(model, tokenizer, prompts: Sequence, labels: Sequence[str], *, system: str | None = None,
                 batch_size: int = 8, max_length: int = 512, progress: bool = True,
                 desc: str = "scoring labels") -> list[list[float]]:
    """``scores[i][j]`` = log P(reply = ``labels[j]`` + end-of-turn | ``prompts[i]``) under ``model``.

    The reply is tokenised exactly as :func:`helpers.common.training.encode_example` tokenises a training target,
    so the student is scored on what it was trained to write. Each prompt is run once; its KV cache is
    then extended by each label's tokens and cropped back (labels are short, prompts are not). On a CPU with
    native bf16 the forward passes run under bf16 autocast (:func:`helpers.common.models.compute_autocast`;
    measured 1.6x faster with the same labels, ``benchmarks/bench_dtype.py``); ``HELPERS_DTYPE=float32`` turns
    it off. Inside :func:`helpers.common.distributed.sharded_work` the batches are split over the ranks.
    """
    import inspect

    import torch
    from transformers import DynamicCache

    from ..common.models import compute_autocast
    from ..common.training import IGNORE_INDEX, encode_example

    accepted = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in accepted else "past_key_values"  # transformers 5 renamed it
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}

    if not labels:
        raise ValueError("score_labels: no labels")
    prompts = list(prompts)
    if not prompts:
        return []
    label_ids = []
    for label in labels:
        enc = encode_example(tokenizer, "x", label, system=system, max_length=max_length)
        label_ids.append([t for t, l in zip(enc["input_ids"], enc["labels"]) if l != IGNORE_INDEX])
    longest = max(len(ids) for ids in label_ids)
    prompt_ids = []
    for prompt in prompts:
        enc = encode_example(tokenizer, prompt, labels[0], system=system, max_length=max_length - longest + 1)
        prompt_ids.append([t for t, l in zip(enc["input_ids"], enc["labels"]) if l == IGNORE_INDEX])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
    scores: list[list[float] | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    local: dict[int, list[float]] = {}
    mine = my_batches(batches)  # all of them, or this rank's share inside sharded_work()
    for batch in tqdm(mine, desc=desc, disable=not progress or len(mine) < 2, leave=False):
        width = max(len(prompt_ids[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every prompt ends at the same position
            n = len(prompt_ids[i])
            ids[row, width - n:] = torch.tensor(prompt_ids[i])
            mask[row, width - n:] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        batch_scores = torch.zeros((len(batch), len(labels)), dtype=torch.float64)
        with torch.no_grad(), compute_autocast(device):
            cache = DynamicCache()
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                        **{cache_arg: cache}, **last_only)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            for j, lab in enumerate(label_ids):
                total = first[:, lab[0]].double()
                if len(lab) > 1:
                    k = len(lab) - 1
                    cont = torch.tensor(lab[:-1], device=device).expand(len(batch), k)
                    cont_mask = torch.cat([mask, torch.ones((len(batch), k), dtype=mask.dtype, device=device)], 1)
                    cont_pos = positions[:, -1:] + torch.arange(1, k + 1, device=device)
                    out2 = model(input_ids=cont, attention_mask=cont_mask, position_ids=cont_pos, use_cache=True,
                                 **{cache_arg: cache})
                    logp = torch.log_softmax(out2.logits.float(), dim=-1)
                    target = torch.tensor(lab[1:], device=device).expand(len(batch), k).unsqueeze(-1)
                    total = total + logp.gather(-1, target).squeeze(-1).double().sum(-1)
                    cache.crop(-k)  # back to the prompt (a negative crop works in 4.x and 5.x)
                batch_scores[:, j] = total.cpu()
        for row, i in enumerate(batch):
            local[i] = batch_scores[row].tolist()
    for i, row_scores in gather_shards(local).items():
        scores[i] = row_scores
    if was_training:
        model.train()
    return scores  # type: ignore[return-value]


def predict_labels(model, tokenizer, prompts: Sequence, labels: Sequence[str], **kwargs) -> list[str]:
    """The best-scoring label for every prompt (always one of ``labels``; ties go to the earlier label)."""
    out = []
    for row in score_labels(model, tokenizer, prompts, labels, **kwargs):
        out.append(labels[max(range(len(labels)), key=lambda j: (row[j], -j))])
    return out
