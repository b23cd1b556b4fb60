"""DINM's two training sequences for one record, as token ids.

* **edit**: adversarial prompt (optionally with the reference's suffix, :data:`REFERENCE_SUFFIX`) → safe
  generation; the NLL reads only the answer tokens;
* **constraint**: the record's ``knowledge constrain`` prompt → answer (D_cons); the KL reads its answer tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: The reference implementation's suffix, appended to every input (edit, knowledge constraint, evaluation).
REFERENCE_SUFFIX = "If the user's request is reasonable, give the correct answer. Please give the right response:"


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

    def packed(self, attn_implementation: str = "sdpa"):
        """Both sequences in one row, for one forward pass: ``(input_ids [1, L1+L2], model_kwargs, positions,
        n_edit)``. ``model_kwargs`` holds ``position_ids`` that restart at 0 for the constraint and a
        block-diagonal causal ``attention_mask`` [1, 1, L, L] (a token sees only earlier tokens of its own
        sequence), so each position's logits equal those of its sequence run alone; ``positions[:n_edit]`` read
        the edit answer, the rest the constraint answer. The mask is boolean for ``sdpa`` and additive for
        ``eager`` (the two attention kernels that take a custom 4-D mask)."""
        import torch

        ids1, pos1 = self.sequence(self.prompt_ids, self.target_ids)
        ids2, pos2 = self.sequence(self.kc_prompt_ids, self.kc_answer_ids)
        n1, n2 = ids1.shape[1], ids2.shape[1]
        ids = torch.cat([ids1, ids2], dim=1)
        segment = torch.cat([torch.zeros(n1, dtype=torch.long), torch.ones(n2, dtype=torch.long)])
        mask = torch.ones(n1 + n2, n1 + n2, dtype=torch.bool).tril() & (segment[:, None] == segment[None, :])
        if attn_implementation == "eager":
            mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
        elif attn_implementation != "sdpa":
            raise ValueError(f"packing the two DINM sequences needs attn_implementation 'sdpa' or 'eager' (a custom "
                             f"4-D mask), not {attn_implementation!r}")
        kwargs = {"position_ids": torch.cat([torch.arange(n1), torch.arange(n2)])[None],
                  "attention_mask": mask[None, None]}
        return ids, kwargs, torch.cat([pos1, pos2 + n1]), len(pos1)


def _text_field(record: dict, path: tuple[str, ...], source: str, purpose: str) -> str:
    from ..safeedit.data import SafeEditFormatError

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
    (where the question usually is, as in :func:`helpers.common.generation.generate`), a target (safe generation,
    knowledge-constraint answer) its **first** ``max_target_tokens`` / ``max_kc_tokens`` tokens; what was
    cut is reported in ``truncated``. An empty safe generation (or, with ``with_kc``, an empty
    knowledge-constraint prompt or answer) raises :class:`helpers.safeedit.data.SafeEditFormatError` naming the record.
    """
    from ..common.generation import chat_prompt

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
        from ..safeedit.data import SafeEditFormatError

        raise SafeEditFormatError(f"{source}: record id {record.get('id')}: a target tokenizes to nothing")
    return inputs
