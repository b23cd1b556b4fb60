"""Text similarity for the LLM2LLM loop: ROUGE-L on word tokens and an index of near-duplicates."""
from __future__ import annotations

import re
from typing import Sequence

# ----------------------------------------------------------------------------------------------------
# ROUGE-L, for near-duplicate detection
# ----------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\w+")


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased word and number tokens (punctuation dropped), as ROUGE is usually computed."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, two rows)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str | Sequence[str], reference: str | Sequence[str]) -> float:
    """ROUGE-L F1 between two texts (or token lists): ``2PR/(P+R)`` with P, R = LCS / length."""
    a = rouge_tokens(candidate) if isinstance(candidate, str) else list(candidate)
    b = rouge_tokens(reference) if isinstance(reference, str) else list(reference)
    if not a or not b:
        return 1.0 if a == b else 0.0
    lcs = lcs_length(a, b)
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


class NearDuplicateIndex:
    """Texts seen so far; :meth:`match` finds one with ROUGE-L ≥ ``threshold``.

    Cheap upper bounds skip most pairs: ROUGE-L F1 ≤ ``2·min(m,n)/(m+n)`` (lengths) and ≤ the F1 of the
    bags of tokens, so only plausible near-copies pay for the LCS.
    """

    def __init__(self, threshold: float = 0.95):
        self.threshold = threshold
        self.items: list[tuple[list[str], dict, str]] = []

    def add(self, text: str, label: str = "") -> None:
        tokens = rouge_tokens(text)
        self.items.append((tokens, _bag(tokens), label))

    def match(self, text: str) -> tuple[float, str] | None:
        tokens = rouge_tokens(text)
        bag, n = _bag(tokens), len(tokens)
        for other, other_bag, label in self.items:
            m = len(other)
            if n + m == 0 or 2 * min(n, m) / (n + m) < self.threshold:
                continue
            common = sum(min(c, other_bag.get(t, 0)) for t, c in bag.items())
            if 2 * common / (n + m) < self.threshold:
                continue
            score = rouge_l(tokens, other)
            if score >= self.threshold:
                return score, label
        return None


def _bag(tokens: list[str]) -> dict:
    bag: dict[str, int] = {}
    for t in tokens:
        bag[t] = bag.get(t, 0) + 1
    return bag
