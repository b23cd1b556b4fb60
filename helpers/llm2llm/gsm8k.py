"""GSM8K for LLM2LLM (chapter 07): the data, the answer format, the task and ``gsm8k-eval``.

* data: ``{"question", "answer", "gold"}`` records (``gold`` is the number after ``####``), from
  ``HELPERS_DATA_DIR`` or the hub (``openai/gsm8k``), or any JSON/JSONL file (:func:`read_gsm8k_file`);
* answers: :func:`extract_prediction` reads the final number of a reply, :func:`answers_match` compares
  numbers after normalisation (commas, ``$``, trailing ``.0``);
* :class:`GSM8KTask` — the :class:`helpers.llm2llm.task.Task` the loop runs: the student's prompt, the
  teacher's prompt, the verifier of teacher replies (:mod:`helpers.llm2llm.arithmetic`);
* ``python -m helpers gsm8k-eval --data test --limit 100 --out results.json`` (``--backend openai:MODEL`` for a
  generation server).
"""
from __future__ import annotations

import argparse
import json
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ..common.io import atomic_write_json
from .arithmetic import ANNOTATION, verify_solution

pass
from ..common.datasets import _check_split, _from_hub, _limit, _local
from .gsm8k_teacher import TEACHER_SYSTEM
from .task import Task

# ----------------------------------------------------------------------------------------------------
# GSM8K and answer extraction
# ----------------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])|(?<![\w.])-?\$?\.\d+")


def normalize_number(text: str) -> str | None:
    """``"$1,234.50"`` → ``"1234.5"``, ``"-3.0"`` → ``"-3"``; ``None`` when ``text`` is no number."""
    from .arithmetic import parse_decimal

    value = parse_decimal(text)
    if value is None:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_gold(answer: str) -> str:
    """The gold answer of a GSM8K solution: the number after ``####``."""
    if "####" not in answer:
        raise ValueError(f"GSM8K answer has no '####' marker: {answer[-80:]!r}")
    value = normalize_number(answer.split("####")[-1])
    if value is None:
        raise ValueError(f"GSM8K answer has no number after '####': {answer[-80:]!r}")
    return value


def extract_prediction(text: str | None) -> str | None:
    """The number a model's answer commits to, or ``None`` when it gives no number.

    Order of preference: the number after ``####``; after "the answer is" / "answer:"; inside
    ``\\boxed{}``; otherwise the last number in the text. Commas, ``$``, negatives and decimals are
    handled, so ``"The answer is $1,250.00."`` gives ``"1250"``.
    """
    if not text:
        return None
    candidates = []
    if "####" in text:
        candidates.append(text.split("####")[-1])
    match = list(re.finditer(r"answer\s*(?:is|:|=)\s*:?\s*(.{0,40})", text, flags=re.IGNORECASE))
    if match:
        candidates.append(match[-1].group(1))
    boxed = re.findall(r"\\boxed\{([^}]*)\}", text)
    if boxed:
        candidates.append(boxed[-1])
    for chunk in candidates:
        numbers = _NUMBER.findall(chunk)
        if numbers:
            value = normalize_number(numbers[0])
            if value is not None:
                return value
    numbers = _NUMBER.findall(text)
    for raw in reversed(numbers):
        value = normalize_number(raw)
        if value is not None:
            return value
    return None


def answers_match(prediction: str | None, gold: str) -> bool:
    """Numeric equality of an extracted prediction and a gold answer."""
    if prediction is None:
        return False
    try:
        return Decimal(prediction) == Decimal(gold)
    except InvalidOperation:
        return False


def load_gsm8k(split: str = "train", limit: int | None = None) -> list[dict]:
    """GSM8K as ``[{"question", "answer", "gold"}]`` (train 7,473; the data folder's test has 1,000)."""
    _check_split(split, ("train", "test"), "GSM8K")
    path = _local("gsm8k", f"{split}.jsonl")
    if path is not None:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    else:
        ds = _from_hub("openai/gsm8k", "main", split=split, what="GSM8K", local_hint="gsm8k/{train,test}.jsonl")
        rows = [dict(r) for r in ds]
    records = [{"question": r["question"], "answer": r["answer"], "gold": extract_gold(r["answer"])} for r in rows]
    return _limit(records, limit)


# ----------------------------------------------------------------------------------------------------
# GSM8K as an LLM2LLM task
# ----------------------------------------------------------------------------------------------------
STUDENT_INSTRUCTION = "Solve the problem step by step. End with a line '#### N', where N is the final answer."


def strip_annotations(answer: str) -> str:
    """``48/2 = <<48/2=24>>24`` → ``48/2 = 24``: the student learns the reasoning, not calculator calls."""
    return ANNOTATION.sub("", answer).strip()


#: what GSM8K's near-duplicate filter compares (:meth:`GSM8KTask.dedup_text`)
DEDUP_ON = ("question+solution", "question")


class GSM8KTask(Task):
    """GSM8K grade-school maths: the student writes a solution ending in ``#### N``; exact-match accuracy.

    ``max_new_tokens`` bounds the student's solutions (256 covers almost all GSM8K solutions);
    ``keep_annotations=False`` trains on solutions without the ``<<…>>`` calculator annotations (shorter,
    and a student has no calculator); the teacher always sees and writes annotated solutions, which is
    what makes its arithmetic verifiable.
    """

    name = "gsm8k"
    default_teacher = "programmatic-gsm8k"
    predicts_by_generation = True  # so its predictions can come from a generation server (--backend)
    teacher_system = TEACHER_SYSTEM

    def __init__(self, max_new_tokens: int = 256, keep_annotations: bool = False,
                 instruction: str = STUDENT_INSTRUCTION, min_question_words: int = 6, sampling: dict | None = None,
                 dedup_on: str = "question+solution"):
        if dedup_on not in DEDUP_ON:
            raise ValueError(f"dedup_on (--dedup-on) must be one of {', '.join(DEDUP_ON)}, got {dedup_on!r}")
        self.dedup_on = dedup_on
        self.max_new_tokens = max_new_tokens
        self.keep_annotations = keep_annotations
        self.instruction = instruction
        self.min_question_words = min_question_words
        self.sampling = sampling  # None: greedy (the course's default); REFERENCE_SAMPLING: the reference's

    def dedup_text(self, record: dict) -> str:
        """What the loop's near-duplicate filter (ROUGE-L) compares — never the fixed instruction every prompt
        shares, which would inflate every similarity. ``dedup_on="question"`` (the reference, set by ``--preset
        reference``): the question alone. The default ``"question+solution"`` adds the solution, so a problem
        with the same story but new numbers and a new answer counts as new: the offline programmatic teacher
        writes exactly such variants, and by the question alone most of them are near-copies (ROUGE-L ≈ 0.95–0.98)."""
        if self.dedup_on == "question":
            return record["question"]
        return f"{record['question'].strip()}\n{self.target(record)}"

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        return load_gsm8k(split, limit)

    def prompt(self, record: dict) -> str:
        question = record["question"].strip()
        return f"{question}\n\n{self.instruction}" if self.instruction else question

    def target(self, record: dict) -> str:
        answer = record["answer"].strip()
        return answer if self.keep_annotations else strip_annotations(answer)

    def key(self, record: dict) -> str:
        return " ".join(record["question"].lower().split())

    def predict(self, model, tokenizer, records, *, batch_size: int = 8, progress: bool = True,
                desc: str = "GSM8K") -> list[dict]:
        from ..common.generation import generate

        sampling = dict(do_sample=True, **self.sampling) if self.sampling else {}
        outputs = generate(model, tokenizer, [self.prompt(r) for r in records], max_new_tokens=self.max_new_tokens,
                           batch_size=batch_size, progress=progress, desc=desc, **sampling)
        results = []
        for record, output in zip(records, outputs):
            prediction = extract_prediction(output)
            results.append({"question": record["question"], "gold": record["gold"], "prediction": prediction,
                            "output": output, "correct": answers_match(prediction, record["gold"])})
        return results

    def teacher_prompt(self, record: dict, student_output: str | None = None) -> str:
        from .gsm8k_teacher import teacher_prompt

        return teacher_prompt(record["question"], record["answer"], student_output)

    def parse_teacher_reply(self, reply: str, seed: dict) -> tuple[list[dict], list[dict]]:
        """``Question: … Answer: … #### N`` blocks → verified records and ``{"text", "reason"}`` rejections."""
        accepted, rejected = [], []
        blocks = re.findall(r"Question:\s*(.*?)\s*\n?\s*Answer:\s*(.*?)(?=\n\s*Question:|\Z)", reply or "", flags=re.DOTALL)
        if not blocks:
            detail = (reply or "").strip()
            reason = "no 'Question: … Answer: …' block in the reply"
            if detail.startswith("(") and len(detail) < 300:
                reason += f" {detail}"
            return [], [{"text": reply, "reason": reason}]
        seed_key = self.key(seed)
        for question, answer in blocks:
            question = question.strip()
            answer = _cut_after_final(answer.strip())
            text = f"Question: {question}\nAnswer: {answer}"
            reasons = []
            if len(question.split()) < self.min_question_words:
                reasons.append(f"question too short ({len(question.split())} words)")
            if len(question) > 2000 or len(answer) > 4000:
                reasons.append("question or answer too long")
            if " ".join(question.lower().split()) == seed_key:
                reasons.append("the question is a copy of the seed question")
            check = verify_solution(answer)
            reasons += check.reasons
            if reasons:
                rejected.append({"text": text, "reason": "; ".join(reasons)})
            else:
                accepted.append({"question": question, "answer": answer, "gold": check.final,
                                 "origin": "generated", "parent": seed_key})
        return accepted, rejected


def _cut_after_final(answer: str) -> str:
    """Drop anything a teacher writes after the ``#### N`` line."""
    match = re.search(r"####\s*\$?\s*-?[\d,]*\.?\d+", answer)
    return answer[: match.end()].strip() if match else answer


# ----------------------------------------------------------------------------------------------------
# GSM8K evaluation (used by `gsm8k-eval`)
# ----------------------------------------------------------------------------------------------------
def read_gsm8k_file(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """GSM8K-style records from a JSONL (or JSON list) file: each needs ``question`` and either ``gold`` or an
    ``answer`` with ``#### N``. ``"test"``/``"train"`` load the GSM8K split instead. Bad records raise a
    ``ValueError`` naming the file, the line and the field."""
    if str(path) in ("test", "train"):
        return load_gsm8k(str(path), limit)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (pass a JSONL of GSM8K records, or 'test')")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder (pass a JSONL of GSM8K records, or 'test')")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be ≥ 1 (or None for all records), got {limit}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from err
    if text.lstrip().startswith("["):
        try:
            rows = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from err
    records = []
    for number, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{path}: record {number} is not a JSON object")
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise ValueError(f"{path}: record {number}: missing or empty field 'question'")
        gold = row.get("gold")
        if gold is None:
            answer = row.get("answer")
            if not isinstance(answer, str) or "####" not in answer:
                raise ValueError(f"{path}: record {number}: needs field 'gold' or an 'answer' with '#### N'")
            gold = answer.split("####")[-1]
        value = normalize_number(str(gold))
        if value is None:
            raise ValueError(f"{path}: record {number}: field 'gold' is not a number ({gold!r})")
        records.append({"question": row["question"], "answer": row.get("answer", ""), "gold": value})
        if limit is not None and len(records) >= limit:
            break
    return records


#: The reference's evaluation decoding (LLM2LLM's GSM8K scripts): sampling at T = 0.7, top-p 0.9 (and 100 new
#: tokens there). The course decodes greedily by default, so a rerun gives the same answers.
REFERENCE_SAMPLING = {"temperature": 0.7, "top_p": 0.9}


def evaluate_gsm8k(model, tokenizer, records: list[dict], *, max_new_tokens: int = 256, batch_size: int = 8,
                   progress: bool = True, sampling: dict | None = None) -> dict:
    """``{"accuracy", "correct", "n", "instances": [{"question", "gold", "prediction", "output", "correct"}]}``
    with the same prompt format the LLM2LLM student is trained with: greedy decoding, or ``sampling`` (e.g.
    ``dict(REFERENCE_SAMPLING, seed=0)``)."""
    task = GSM8KTask(max_new_tokens=max_new_tokens, sampling=sampling)
    instances = task.predict(model, tokenizer, records, batch_size=batch_size, progress=progress)
    correct = sum(i["correct"] for i in instances)
    return {"accuracy": correct / max(1, len(instances)), "correct": correct, "n": len(instances),
            "instances": instances}


def add_arguments_gsm8k_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="JSONL of GSM8K records (question + answer/gold), or 'test'")
    parser.add_argument("--model", default=None, help="model name or folder (default: the embedded model)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N problems")
    parser.add_argument("--out", required=True, help="results JSON (accuracy and instances)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--decoding", choices=("greedy", "reference"), default="greedy",
                        help="greedy (default: the same answers on every run) or the reference's sampling "
                             "(T 0.7, top-p 0.9; its scripts also use --max-new-tokens 100)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed for --decoding reference")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-progress", action="store_true")
    from ..common.backend import add_backend_arguments

    add_backend_arguments(parser)


def main_gsm8k_eval(args: argparse.Namespace) -> int:
    from ..common.backend import backend_from_args, parse_backend
    from ..common.checks import at_least, check_model_name, check_output_file, require_records
    from ..common.models import load_model
    from ..common.results import hardware

    at_least(args, 1, "limit", "max_new_tokens", "batch_size")
    check_output_file(args.out)
    check_model_name(args.model)
    if parse_backend(args.backend) is not None and args.model is not None:
        raise ValueError("--model and --backend both name a model: with --backend openai:MODEL the server's MODEL "
                         "is evaluated (leave --model out)")
    backend = backend_from_args(args)  # flags checked and the server reached before anything loads
    records = require_records(read_gsm8k_file(args.data, args.limit), args.data, "GSM8K problems")
    if backend is not None:
        model, tokenizer = backend, None
    else:
        model, tokenizer = load_model(args.model, device=args.device)
    sampling = dict(REFERENCE_SAMPLING, seed=args.seed) if args.decoding == "reference" else None
    result = evaluate_gsm8k(model, tokenizer, records, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, progress=not args.no_progress, sampling=sampling)
    payload = {"model": backend.name if backend else args.model or "smollm2-135m-instruct", "data": str(args.data),
               "limit": args.limit, "max_new_tokens": args.max_new_tokens,
               "decoding": {"greedy": True} if sampling is None else sampling, "hardware": hardware(), **result}
    if backend is not None:
        payload["backend"] = {"base_url": backend.base_url, "concurrency": backend.concurrency}
    atomic_write_json(args.out, payload)
    print(f"accuracy {result['accuracy']:.3f} ({result['correct']}/{result['n']}) → {args.out}")
    return 0
