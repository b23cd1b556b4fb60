"""Stage 6 of the SafeEdit build: questions split train/validation/test 3:2:1, stratified by category and
seeded, so that no question appears in two splits."""
from __future__ import annotations

import random
from typing import Sequence

SPLITS = ("train", "validation", "test")
#: train : validation : test, as in the official 4,050 / 2,700 / 1,350.
SPLIT_RATIOS = (3, 2, 1)


# ----------------------------------------------------------------------------------------------------
# Splits and D_cons
# ----------------------------------------------------------------------------------------------------
def allocate(n: int, ratios: Sequence[float] = SPLIT_RATIOS) -> list[int]:
    """Split ``n`` items by ``ratios`` (largest remainder); every split gets one when ``n ≥ len(ratios)``."""
    total = float(sum(ratios))
    exact = [n * r / total for r in ratios]
    counts = [int(x) for x in exact]
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(ratios):
        while 0 in counts:
            counts[counts.index(max(counts))] -= 1
            counts[counts.index(0)] += 1
    return counts


def stratified_split(labels: Sequence[str], *, seed: int = 0, ratios: Sequence[float] = SPLIT_RATIOS,
                     names: Sequence[str] = SPLITS) -> list[str]:
    """A split name for each item, stratified by ``labels`` and seeded (independent of the item order)."""
    assignment = [""] * len(labels)
    for label in dict.fromkeys(labels):
        members = [i for i, lab in enumerate(labels) if lab == label]
        random.Random(f"{seed}:{label}").shuffle(members)
        start = 0
        for name, count in zip(names, allocate(len(members), ratios)):
            for i in members[start:start + count]:
                assignment[i] = name
            start += count
    return assignment
