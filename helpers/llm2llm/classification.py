"""Classification tasks for LLM2LLM beyond GSM8K (chapter 08): SST-2, TREC, SNIPS and CaseHOLD.

The LLM2LLM paper reports five data sets but released code only for GSM8K. This module implements the
:class:`helpers.llm2llm.task.Task` interface for the four classification sets, so :mod:`helpers.llm2llm.loop` runs on
them unchanged (``python -m helpers llm2llm --dataset sst2 …``).

* **Format** — instruction → label: the student sees one instruction (task, label options, the text) and
  is trained to reply with the bare label (``positive``, ``NUM``, ``GetWeather``, ``2``).
* **Label-constrained prediction** — :func:`score_labels` computes, for every label, the log-probability
  of the reply ``label + end-of-turn`` after the prompt (exactly the training format of
  :func:`helpers.common.training.encode_example`), sharing one forward pass of the prompt across labels (KV
  cache). The prediction is the best-scoring label, so every output is a valid label by construction.
* **Teacher prompts** — :meth:`ClassificationTask.teacher_prompt` asks for ONE new example with the
  seed's label, in the data set's style, showing the seed and the student's wrong answer.
* **Validation** — :meth:`ClassificationTask.parse_teacher_reply` accepts a reply only when it is
  well-formed (a ``Text:`` line, not empty, no template placeholder, not too long), carries a valid label
  equal to the seed's, is not a (near-)copy of the seed, not a test item and not a duplicate; every
  rejection has a reason.
* **An offline stand-in teacher** — :class:`OfflineClassificationTeacher` (``--teacher offline-classification``)
  is *not a language model*: it reads the seed out of the prompt and perturbs it with WordNet synonyms
  (:mod:`helpers.llm2llm.eda`). It exists so the loop produces valid new data in CI, where the embedded 135M
  model writes poor examples; real runs use an LLM teacher.

CaseHOLD is on the hub only (``casehold/casehold``); offline, :meth:`ClassificationTask.load` raises
:class:`helpers.common.datasets.DataNotAvailableError` with instructions, and the notebook skips it with that message.
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence

from ..common.datasets import DataNotAvailableError
from ..common.teacher import Teacher
from .datasets import CLASSIFICATION_LOADERS, LABELS
from .label_scoring import (
    CHOICE_LINE,
    FIELD_LINE,
    PLACEHOLDER,
    _norm,
    _plain,
    normalise_label,
    score_labels,
    similarity,
)
from .task import Task, check_seed_size

# ----------------------------------------------------------------------------------------------------
# Per-data-set wording
# ----------------------------------------------------------------------------------------------------
#: What each data set is, how its items are called, what its labels mean, and how long items may be.
SPECS: dict[str, dict] = {
    "sst2": {
        "what": "movie-review sentiment",
        "unit": "movie-review sentence",
        "question": "Is this movie review negative or positive?",
        "field": "Review",
        "labels": {"negative": "negative opinion", "positive": "positive opinion"},
        "style": "lower case, tokenised like the example (spaces around punctuation, 's and n't split off)",
        "max_words": 60,
    },
    "trec": {
        "what": "question-type (TREC)",
        "unit": "question",
        "question": "Which type of answer does this question ask for: ABBR, ENTY, DESC, HUM, LOC or NUM?",
        "field": "Question",
        "labels": {"ABBR": "an abbreviation or its expansion", "ENTY": "an entity (thing, animal, colour, …)",
                   "DESC": "a description, definition or reason", "HUM": "a person or group",
                   "LOC": "a location", "NUM": "a number, date, amount or other numeric value"},
        "style": "one question ending with ' ?', tokenised like the example",
        "max_words": 40,
    },
    "snips": {
        "what": "voice-assistant intent (SNIPS)",
        "unit": "voice-assistant request",
        "question": ("Which intent: AddToPlaylist, BookRestaurant, GetWeather, PlayMusic, RateBook, "
                     "SearchCreativeWork or SearchScreeningEvent?"),
        "field": "Request",
        "labels": {"AddToPlaylist": "add a song or artist to a playlist",
                   "BookRestaurant": "book a table at a restaurant",
                   "GetWeather": "ask for the weather", "PlayMusic": "play music",
                   "RateBook": "rate a book", "SearchCreativeWork": "find a book, film, song, game or show",
                   "SearchScreeningEvent": "find movie times or cinemas"},
        "style": "one spoken request in lower case without punctuation",
        "max_words": 40,
    },
    "casehold": {
        "what": "legal holding (CaseHOLD)",
        "unit": "citing context",
        "question": "Which holding (0-4) does the cited case stand for at <HOLDING>?",
        "labels": {str(i): f"holding {i}" for i in range(5)},
        "style": "a passage of a US court decision citing a case, with <HOLDING> where the holding is cited",
        "max_words": 400,
    },
}


# ----------------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------------
class ClassificationTask(Task):
    """SST-2, TREC, SNIPS or CaseHOLD as an LLM2LLM task (see the module docstring).

    ``near_copy``: a generated text at least this similar (:func:`similarity`) to its seed is rejected.
    The student prompt is short on purpose (it is run for every training step and every prediction on CPU);
    the teacher prompt explains the labels.
    """

    #: the teacher the LLM2LLM loop uses when none is named: the offline stand-in (works in CI); pass
    #: ``teacher="embedded"``, a local model or ``"openai:MODEL"`` for a real LLM teacher
    default_teacher = "offline-classification"

    def __init__(self, name: str, *, near_copy: float = 0.95, max_words: int | None = None):
        if name not in SPECS:
            raise ValueError(f"unknown classification data set {name!r}; choose one of {sorted(SPECS)}")
        self.name = name
        self.spec = SPECS[name]
        self.labels: list[str] = list(LABELS[name])
        self.near_copy = near_copy
        self.max_words = max_words or self.spec["max_words"]
        self.multiple_choice = name == "casehold"
        self.test_keys: set[str] | None = None
        self.known_keys: set[str] = set()

    # -- data --------------------------------------------------------------------------------------
    def load(self, split: str, limit: int | None = None) -> list[dict]:
        """Records ``{"text", "label"[, "choices"]}`` of ``split``; loading ``test`` also registers its keys
        (the full split), so generated examples that copy a test item are rejected."""
        loader = CLASSIFICATION_LOADERS[self.name]
        records = [dict(r) for r in loader(split, limit)]
        if split == "test":
            everything = records if limit is None else loader(split, None)
            self.forbid(everything)
        return records

    def forbid(self, records: Sequence[dict]) -> None:
        """Register ``records`` as test items: a generated example equal to one of them is rejected."""
        self.test_keys = (self.test_keys or set()) | {self.key(r) for r in records}

    def remember(self, records: Sequence[dict]) -> None:
        """Register training examples, so a generated example that repeats one is rejected as a duplicate."""
        self.known_keys |= {self.key(r) for r in records}

    def sample_seeds(self, records: Sequence[dict], n: int, seed: int = 0) -> list[dict]:
        """A seeded, label-stratified sample of ``n`` records (every label gets ⌊n/L⌋ or one more while it has
        records), so a 12-example seed set of TREC still sees every question type. More seeds than records is
        an error (never silently fewer)."""
        check_seed_size(self.name, n, len(records))
        rng = random.Random(f"{self.name}:{seed}")
        by_label: dict[str, list[dict]] = {label: [] for label in self.labels}
        for record in records:
            by_label.setdefault(record["label"], []).append(record)
        for pool in by_label.values():
            rng.shuffle(pool)
        picked: list[dict] = []
        labels = [label for label in self.labels if by_label.get(label)]
        rng.shuffle(labels)
        round_ = 0
        while len(picked) < min(n, len(records)):
            for label in labels:
                if round_ < len(by_label[label]) and len(picked) < n:
                    picked.append(by_label[label][round_])
            round_ += 1
        rng.shuffle(picked)
        return picked

    # -- student format ----------------------------------------------------------------------------
    def options_text(self) -> str:
        return "; ".join(f"{label} = {meaning}" for label, meaning in self.spec["labels"].items())

    def prompt(self, record: dict) -> str:
        if self.multiple_choice:
            holdings = "\n".join(f"{i}: {c}" for i, c in enumerate(record["choices"]))
            return (f"{self.spec['question']} Answer with the number only.\n"
                    f"Context: {record['text']}\nHoldings:\n{holdings}")
        return f"{self.spec['question']}\n{self.spec['field']}: {record['text']}"

    def target(self, record: dict) -> str:
        return record["label"]

    def key(self, record: dict) -> str:
        text = _norm(record["text"])
        if self.multiple_choice and record.get("choices"):
            text += " || " + " | ".join(_norm(c) for c in record["choices"])
        return text

    def dedup_text(self, record: dict) -> str:
        """What the loop's near-duplicate check (ROUGE-L) compares: the text (and holdings) with the label —
        not the instruction, which every prompt shares."""
        holdings = " ".join(record.get("choices") or ())
        return f"{record['text']} {holdings}\n{record['label']}"

    def predict(self, model, tokenizer, records: Sequence[dict], *, batch_size: int = 8,
                progress: bool = True, desc: str | None = None) -> list[dict]:
        """Label-constrained prediction: ``{"prediction", "output", "correct", "scores"}`` per record."""
        records = list(records)
        scores = score_labels(model, tokenizer, [self.prompt(r) for r in records], self.labels,
                              batch_size=batch_size, progress=progress, desc=desc or f"{self.name}: scoring")
        out = []
        for record, row in zip(records, scores):
            best = max(range(len(self.labels)), key=lambda j: (row[j], -j))
            prediction = self.labels[best]
            out.append({"prediction": prediction, "output": prediction, "correct": prediction == record["label"],
                        "scores": {label: round(s, 4) for label, s in zip(self.labels, row)}})
        return out

    def label_agreement(self, records: Sequence[dict]) -> dict | None:
        """How often an oracle trained on the full training split agrees with the labels of ``records`` (the
        teacher's new examples): :func:`helpers.llm2llm.oracle.label_agreement`, a diagnostic, not a filter."""
        from .oracle import label_agreement

        return label_agreement(self, records)

    # -- teacher side ------------------------------------------------------------------------------
    def example_block(self, record: dict) -> str:
        """A record as the teacher sees it (and must answer): ``Text:``/``Label:`` lines (CaseHOLD: context,
        holdings and answer)."""
        if self.multiple_choice:
            holdings = "\n".join(f"Holding {i}: {c}" for i, c in enumerate(record["choices"]))
            return f"Context: {record['text']}\n{holdings}\nAnswer: {record['label']}"
        return f"Text: {record['text']}\nLabel: {record['label']}"

    @property
    def teacher_max_new_tokens(self) -> int:
        """The reply budget of a language-model teacher: one example is ~20–60 tokens (CaseHOLD ~400)."""
        return 512 if self.multiple_choice else 128

    @property
    def teacher_stop(self) -> list[str]:
        """Where a teacher's reply ends: a blank line, or the start of a second example (a small model that
        ignores "ONE" repeats the block until its budget runs out)."""
        return ["\nContext:"] if self.multiple_choice else ["\n\n", "\nText:"]

    def demonstrations(self, record: dict, data: Sequence[dict], k: int = 2) -> list[dict]:
        """Up to ``k`` *other* seed examples with ``record``'s label, the same ones on every run (ordered by a
        hash of their text): the few-shot turns of :meth:`teacher_prompt`."""
        same = [r for r in data if r.get("origin", "seed") == "seed" and r["label"] == record["label"]
                and self.key(r) != self.key(record)]
        same.sort(key=lambda r: hashlib.sha256(f"{self.key(record)}|{self.key(r)}".encode()).hexdigest())
        return same[:k]

    def few_shot_prompt(self, record: dict, student_output: str | None, demonstrations: Sequence[dict]) -> list:
        """The teacher prompt for a language model: chat turns in which the teacher "already wrote"
        ``demonstrations`` (other seeds with the label) in the reply format, then the wrong seed and the ask for
        one new example. A 135M instruct model follows this far better than the one long instruction."""
        spec, label = self.spec, record["label"]
        what = f"{spec['unit']} with the label {label}" if not self.multiple_choice else \
            f"citing context whose correct holding is number {label}"
        ask = f"Write one new {what} ({spec['labels'][label]})."
        messages = [{"role": "system", "content": f"You write training data for a {spec['what']} classifier. "
                     f"Labels: {self.options_text()}. Reply in the format of the examples, nothing else."}]
        for demo in demonstrations:
            messages += [{"role": "user", "content": ask},
                         {"role": "assistant", "content": self.example_block(demo)}]
        wrong = (f" A small student model answered {student_output!r} for it, which is wrong."
                 if student_output and student_output != label else "")
        messages.append({"role": "user", "content": f"{ask} Here is one the student gets wrong:{wrong}\n"
                         f"{self.example_block(record)}\nWrite a new, different one about something else."})
        return messages

    def teacher_prompt(self, record: dict, student_output: str | None = None,
                       demonstrations: Sequence[dict] | None = None) -> str | list:
        """The prompt that asks for ONE new example with ``record``'s label: with ``demonstrations`` the
        few-shot chat turns of :meth:`few_shot_prompt` (for language models), else one instruction (what
        the offline stand-in reads)."""
        if demonstrations is not None:
            return self.few_shot_prompt(record, student_output, demonstrations)
        spec, label = self.spec, record["label"]
        wrong = (f" A small student model answered {student_output!r}, which is wrong."
                 if student_output and student_output != label else "")
        if self.multiple_choice:
            return (f"You write training data for a {spec['what']} task: given a citing context from a court "
                    f"decision and five candidate holdings, pick the holding that the cited case stands for.\n"
                    f"Here is an example; the correct holding is number {label}.{wrong}\n\n"
                    f"{self.example_block(record)}\n\n"
                    f"Write ONE new example on a different legal question, in the same style: {spec['style']}. "
                    f"Its correct holding must again be number {label}, and the other four holdings must be "
                    f"plausible but wrong. Reply in exactly this format:\n"
                    f"Context: <the new citing context>\nHolding 0: <holding>\nHolding 1: <holding>\n"
                    f"Holding 2: <holding>\nHolding 3: <holding>\nHolding 4: <holding>\nAnswer: {label}")
        return (f"You write training data for a {spec['what']} classifier. Labels: {self.options_text()}.\n"
                f"Here is an example with the label {label} ({spec['labels'][label]}).{wrong}\n\n"
                f"{self.example_block(record)}\n\n"
                f"Write ONE new {spec['unit']} whose label is also {label}. Make it different from the example "
                f"(new content, not a rewording), in the style of the data set: {spec['style']}. "
                f"Reply with exactly two lines:\nText: <the new {spec['unit']}>\nLabel: {label}")

    def _parse_blocks(self, reply: str) -> list[dict]:
        """Split a reply into candidate ``{"text", "label", "choices"}`` blocks (one per ``Text:``/``Context:``)."""
        blocks: list[dict] = []
        current: dict | None = None
        for line in reply.splitlines():
            choice = CHOICE_LINE.match(line) if self.multiple_choice else None
            if choice and current is not None:
                current.setdefault("choices", {})[int(choice.group(1))] = choice.group(2)
                continue
            field = FIELD_LINE.match(line)
            if not field:
                continue
            name, value = field.group(1).lower(), field.group(2).strip().strip('"').strip("\u201c\u201d").strip()
            if name in ("label", "answer"):
                if current is not None and "label" not in current:
                    current["label"] = value
            else:
                current = {"text": value}
                blocks.append(current)
        return blocks

    def parse_teacher_reply(self, reply: str, seed: dict, *, rephrase: bool = False) -> tuple[list[dict], list[dict]]:
        """Validate a teacher reply into ``(accepted, rejected)`` (see the module docstring for the checks).

        ``rephrase=True`` (AugGPT) accepts close paraphrases (only exact copies of the seed are rejected),
        and CaseHOLD rephrasings keep the seed's holdings.
        """
        accepted: list[dict] = []
        rejected: list[dict] = []
        if self.test_keys is None:
            try:
                self.load("test")
            except DataNotAvailableError:
                self.test_keys = set()
        seed_key = self.key(seed)
        blocks = self._parse_blocks(reply or "")
        if not blocks:
            what = "'Context:'" if self.multiple_choice else "'Text:'"
            return [], [{"text": (reply or "").strip(), "reason": f"malformed: no {what} line in the reply"}]
        for block in blocks[:1]:  # the prompt asks for ONE example: what follows it is the model rambling on
            text = block["text"]
            reason = None
            choices = None
            if self.multiple_choice:
                found = block.get("choices") or {}
                if rephrase and not found:
                    choices = list(seed["choices"])
                elif sorted(found) != list(range(5)):
                    reason = f"malformed: expected holdings 0-4, got {sorted(found) or 'none'}"
                else:
                    choices = [found[i] for i in range(5)]
            label_text = block.get("label")
            label = normalise_label(label_text, self.labels) if label_text is not None else seed["label"]
            words = len(text.split())
            if reason:
                pass
            elif not text:
                reason = "malformed: empty text"
            elif PLACEHOLDER.search(text):
                reason = "malformed: the template placeholder was copied"
            elif words > self.max_words:
                reason = f"malformed: too long ({words} words > {self.max_words})"
            elif label is None:
                reason = f"invalid label {label_text!r} (not one of {self.labels})"
            elif label != seed["label"]:
                reason = f"label {label!r} differs from the seed's label {seed['label']!r}"
            else:
                record = {"text": text, "label": label}
                if choices is not None:
                    record["choices"] = choices
                key = self.key(record)
                sim = similarity(text, seed["text"])
                if key == seed_key or _plain(text) == _plain(seed["text"]):
                    reason = "copy of the seed"
                elif not rephrase and sim >= self.near_copy:
                    reason = f"near-copy of the seed (similarity {sim:.2f} >= {self.near_copy})"
                elif key in (self.test_keys or ()):
                    reason = "is a test item"
                elif key in self.known_keys:
                    reason = "duplicate of an existing example"
            if reason:
                rejected.append({"text": text, "reason": reason})
                continue
            record.update(origin="generated", parent=seed_key)
            self.known_keys.add(key)
            accepted.append(record)
        return accepted, rejected


def make_task(name: str, **options) -> ClassificationTask:
    """The factory :data:`helpers.llm2llm.task.TASKS` points at: ``make_task("trec")``."""
    return ClassificationTask(name, **options)


# ----------------------------------------------------------------------------------------------------
# Offline stand-in teacher
# ----------------------------------------------------------------------------------------------------
class OfflineClassificationTeacher(Teacher):
    """A STAND-IN for an LLM teacher (no language model): it reads the example out of a classification
    teacher prompt (the first ``Text:``/``Context:`` block) and returns a WordNet-perturbed copy in the
    requested reply format, keeping the label (and CaseHOLD's holdings).

    It makes the LLM2LLM loop produce *valid* new data offline and in CI; it cannot write genuinely new
    examples, so results with it measure the loop's targeting of hard seeds, not a teacher's knowledge.
    A prompt it cannot read gets a refusal line (which validation then rejects).
    """

    name = "offline-classification (stand-in: WordNet perturbations, not an LLM)"
    prompt_style = "instruction"

    def __init__(self, log_path=None, *, alpha: float = 0.3):
        super().__init__(log_path)
        self.alpha = alpha

    def _one(self, prompt, seed, temperature) -> str:
        from .eda import apply_operation

        text = prompt if isinstance(prompt, str) else "\n".join(m.get("content", "") for m in prompt)
        example = self._example(text)
        if example is None:
            return "I could not find an example to work from."
        body, label, holdings = example
        digest = hashlib.sha256(f"{seed}:{temperature}:{text}".encode()).hexdigest()
        rng = random.Random(int(digest[:16], 16))
        new = apply_operation(body, "sr", alpha=self.alpha, rng=rng)
        for operation in ("ri", "rs", "rd"):  # push on while it is still (nearly) the seed
            if similarity(new, body) < 0.9:
                break
            new = apply_operation(new, operation, alpha=self.alpha, rng=rng)
        if holdings:
            lines = "\n".join(f"Holding {i}: {h}" for i, h in enumerate(holdings))
            return f"Context: {new}\n{lines}\nAnswer: {label}"
        return f"Text: {new}\nLabel: {label}"

    @staticmethod
    def _example(text: str):
        body = label = None
        holdings: dict[int, str] = {}
        for line in text.splitlines():
            field = FIELD_LINE.match(line)
            choice = CHOICE_LINE.match(line)
            if choice and body is not None and label is None:
                holdings[int(choice.group(1))] = choice.group(2)
            elif field and field.group(1).lower() in ("text", "context") and body is None:
                body = field.group(2)
            elif field and field.group(1).lower() in ("label", "answer") and body is not None and label is None:
                label = field.group(2)
                break
        if not body or PLACEHOLDER.search(body) or label is None:
            return None
        return body, label, [holdings[i] for i in sorted(holdings)] if holdings else None

    def _complete(self, prompts, *, max_new_tokens, temperature, seed, system):
        return [self._one(prompt, seed, temperature) for prompt in prompts]
