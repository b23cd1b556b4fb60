"""The general-performance sets of the DINM paper: TriviaQA for KQA, XSum for Csum, and the instructions of
the over-refusal check — from ``HELPERS_DATA_DIR`` or the hub."""
from __future__ import annotations

import json

from ..common.datasets import _from_hub, _limit, _local


# ----------------------------------------------------------------------------------------------------
# General-performance data (SafeEdit's KQA / Csum) and instruction data (D_cons)
# ----------------------------------------------------------------------------------------------------
def load_triviaqa(limit: int | None = None) -> list[dict]:
    """TriviaQA questions ``{"question", "answer", "aliases"}`` (data folder: 3,000 validation questions)."""
    path = _local("triviaqa", "triviaqa_sm_sub.jsonl")
    records = []
    if path is not None:
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                r = json.loads(line)
                question = r["context"].removeprefix("Question:").removesuffix("Answer:").strip()
                records.append({"question": question, "answer": r["answer"], "aliases": list(r["aliases"])})
    else:
        ds = _from_hub("mandarjoshi/trivia_qa", "rc.nocontext", split="validation", what="TriviaQA",
                       local_hint="triviaqa/triviaqa_sm_sub.jsonl")
        records = [{"question": r["question"], "answer": r["answer"]["value"], "aliases": list(r["answer"]["aliases"])}
                   for r in ds]
    return _limit(records, limit)


def load_xsum(limit: int | None = None) -> list[dict]:
    """XSum articles ``{"id", "document", "summary"}`` (data folder: 1,000 test articles)."""
    path = _local("xsum", "xsum_test_1000.jsonl")
    if path is not None:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    else:
        ds = _from_hub("EdinburghNLP/xsum", split="test", what="XSum", local_hint="xsum/xsum_test_1000.jsonl")
        records = [{"id": r["id"], "document": r["document"], "summary": r["summary"]} for r in ds]
    return _limit(records, limit)


def load_instructions(limit: int | None = None) -> list[dict]:
    """Instruction-following pairs ``{"instruction", "input", "output"}`` (Alpaca-style)."""
    path = _local("instructions", "alpaca_libre_ok.jsonl")
    if path is not None:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    else:
        rows = [dict(r) for r in _from_hub("tatsu-lab/alpaca", split="train", what="Instruction data",
                                            local_hint="instructions/alpaca_libre_ok.jsonl")]
    records = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]} for r in rows]
    return _limit(records, limit)
