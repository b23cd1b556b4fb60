"""Classification tasks for LLM2LLM beyond GSM8K (chapter 08): SST-2, TREC, SNIPS and CaseHOLD.

The LLM2LLM paper reports five data sets but released code only for GSM8K. This module implements the
:class:`helpers.task.Task` interface for the four classification sets, so :mod:`helpers.llm2llm` runs on
them unchanged (``python -m helpers llm2llm --dataset sst2 …``).

* **Format** — instruction → label: the student sees one instruction (task, label options, the text) and
  is trained to reply with the bare label (``positive``, ``NUM``, ``GetWeather``, ``2``).
* **Label-constrained prediction** — :func:`score_labels` computes, for every label, the log-probability
  of the reply ``label + end-of-turn`` after the prompt (exactly the training format of
  :func:`helpers.student.encode_example`), sharing one forward pass of the prompt across labels (KV
  cache). The prediction is the best-scoring label, so every output is a valid label by construction.
* **Teacher prompts** — :meth:`ClassificationTask.teacher_prompt` asks for ONE new example with the
  seed's label, in the data set's style, showing the seed and the student's wrong answer.
* **Validation** — :meth:`ClassificationTask.parse_teacher_reply` accepts a reply only when it is
  well-formed (a ``Text:`` line, not empty, no template placeholder, not too long), carries a valid label
  equal to the seed's, is not a (near-)copy of the seed, not a test item and not a duplicate; every
  rejection has a reason.
* **An offline stand-in teacher** — :class:`OfflineClassificationTeacher` (``--teacher offline-classification``)
  is *not a language model*: it reads the seed out of the prompt and perturbs it with WordNet synonyms
  (:mod:`helpers.eda`). It exists so the loop produces valid new data in CI, where the embedded 135M
  model writes poor examples; real runs use an LLM teacher.

CaseHOLD is on the hub only (``casehold/casehold``); offline, :meth:`ClassificationTask.load` raises
:class:`helpers.data.DataNotAvailableError` with instructions, and the notebook skips it with that message.
"""
from __future__ import annotations

import difflib
import hashlib
import random
import re
from typing import Sequence

from tqdm.auto import tqdm

from .data import CLASSIFICATION_LOADERS, LABELS, DataNotAvailableError
from .task import Task, check_seed_size
from .teacher import Teacher

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

    The reply is tokenised exactly as :func:`helpers.student.encode_example` tokenises a training target,
    so the student is scored on what it was trained to write. Each prompt is run once; its KV cache is
    then extended by each label's tokens and cropped back (labels are short, prompts are not).
    """
    import inspect

    import torch
    from transformers import DynamicCache

    from .student import IGNORE_INDEX, encode_example

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
    for batch in tqdm(batches, desc=desc, disable=not progress or len(batches) < 2, leave=False):
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
        with torch.no_grad():
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
            scores[i] = batch_scores[row].tolist()
    if was_training:
        model.train()
    return scores  # type: ignore[return-value]


def predict_labels(model, tokenizer, prompts: Sequence, labels: Sequence[str], **kwargs) -> list[str]:
    """The best-scoring label for every prompt (always one of ``labels``; ties go to the earlier label)."""
    out = []
    for row in score_labels(model, tokenizer, prompts, labels, **kwargs):
        out.append(labels[max(range(len(labels)), key=lambda j: (row[j], -j))])
    return out


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

    # -- teacher side ------------------------------------------------------------------------------
    def example_block(self, record: dict) -> str:
        """A record as the teacher sees it (and must answer): ``Text:``/``Label:`` lines (CaseHOLD: context,
        holdings and answer)."""
        if self.multiple_choice:
            holdings = "\n".join(f"Holding {i}: {c}" for i, c in enumerate(record["choices"]))
            return f"Context: {record['text']}\n{holdings}\nAnswer: {record['label']}"
        return f"Text: {record['text']}\nLabel: {record['label']}"

    def teacher_prompt(self, record: dict, student_output: str | None = None) -> str:
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
        for block in blocks:
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
    """The factory :data:`helpers.task.TASKS` points at: ``make_task("trec")``."""
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


# ----------------------------------------------------------------------------------------------------
# The chapter's comparison: seed-only vs LLM2LLM vs AugGPT vs EDA at an equal data budget
# ----------------------------------------------------------------------------------------------------
METHODS = ("seed-only", "llm2llm", "auggpt", "eda")


def compare_methods(dataset: str, *, out_dir, seed_size: int, iterations: int, test_size: int | None = None,
                    teacher=None, student=None, epochs: float = 3, lr: float = 5e-5, batch_size: int = 8,
                    max_length: int = 512, train_layers: int | None = None, per_wrong: int = 1,
                    evaluate_on: str = "train", teacher_max_new_tokens: int = 128, seed: int = 0,
                    progress: bool = True) -> dict:
    """Run LLM2LLM on ``dataset`` and its baselines at an equal data budget; returns (and writes
    ``out_dir/comparison.json``) ``{"dataset", "budget", "methods": {name: {"train_size", "test_accuracy", …}}}``.

    * **seed-only** — the LLM2LLM run's iteration 0 (the same student trained on the seeds alone);
    * **llm2llm** — :func:`helpers.llm2llm.run_llm2llm` for ``iterations`` rounds (``out_dir/llm2llm``);
    * **auggpt** — the teacher rephrases every seed (:func:`helpers.auggpt.auggpt`) until it has added as many
      examples as LLM2LLM did (``budget``);
    * **eda** — :func:`helpers.eda.augment` adds ``budget`` EDA variants of the seeds.

    Every student starts from the same base model with the same training settings and seed; the augmented
    ones train on ``seed_size + budget`` examples. Each finished method is saved under ``out_dir`` and logged
    to ``out_dir/comparison_log.jsonl`` (a :class:`helpers.io.RunLog` hashed over all these settings); a rerun
    with the same settings reuses it, a rerun with other settings computes it again. ``student``: an already
    loaded ``(model, tokenizer)`` (never modified); ``teacher``: a :class:`~helpers.teacher.Teacher` or a name
    (default: the task's offline stand-in).
    """
    from pathlib import Path

    from .auggpt import auggpt
    from .eda import augment
    from .io import RunLog, atomic_write_json, read_jsonl, write_jsonl
    from .llm2llm import run_llm2llm
    from .models import load_model
    from .student import finetune
    from .teacher import Teacher, get_teacher

    out_dir = Path(out_dir)
    task = make_task(dataset)
    if student is None:
        student = load_model()
    base_model, tokenizer = student
    teacher = teacher or task.default_teacher
    run_dir = out_dir / "llm2llm"
    log = RunLog.open(out_dir / "comparison_log.jsonl", {
        "dataset": dataset, "seed_size": seed_size, "iterations": iterations, "test_size": test_size,
        "teacher": teacher if isinstance(teacher, str) else getattr(teacher, "name", type(teacher).__name__),
        "student": getattr(base_model, "name_or_path_for_course", None), "epochs": epochs, "lr": lr,
        "batch_size": batch_size, "max_length": max_length, "train_layers": train_layers, "per_wrong": per_wrong,
        "evaluate_on": evaluate_on, "teacher_max_new_tokens": teacher_max_new_tokens, "seed": seed})
    summary = run_llm2llm(task, teacher, seed_size=seed_size, iterations=iterations, out_dir=run_dir,
                          per_wrong=per_wrong, test_size=test_size, student=student, epochs=epochs, lr=lr,
                          batch_size=batch_size, max_length=max_length, train_layers=train_layers,
                          evaluate_on=evaluate_on, teacher_max_new_tokens=teacher_max_new_tokens, seed=seed,
                          progress=progress)
    seeds = list(read_jsonl(run_dir / "seed.jsonl"))
    entries = summary["iterations"]
    budget = entries[-1]["train_size"] - entries[0]["train_size"]
    test = task.load("test", test_size)
    teacher_obj = teacher if isinstance(teacher, Teacher) else (
        get_teacher(teacher, model=base_model, tokenizer=tokenizer) if teacher in ("embedded", None)
        else get_teacher(teacher))

    def train_and_test(method: str, examples: list[dict]) -> dict:
        path = out_dir / method / "result.json"
        if method in log:
            return log.get(method)["result"]
        write_jsonl(out_dir / method / "train.jsonl", examples)
        model = finetune(base_model, [{"prompt": task.prompt(r), "response": task.target(r)} for r in examples],
                         tokenizer=tokenizer, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
                         train_layers=train_layers, seed=seed, progress=progress, desc=f"{method}: fine-tuning")
        predictions = task.predict(model, tokenizer, test, progress=progress, desc=f"{method}: test")
        write_jsonl(out_dir / method / "test_predictions.jsonl", predictions)
        del model
        correct = sum(p["correct"] for p in predictions)
        result = {"train_size": len(examples), "added": len(examples) - len(seeds),
                  "test_accuracy": correct / max(1, len(test)), "test_correct": correct}
        atomic_write_json(path, result)
        log.append({"result": result}, key=method)
        return result

    methods = {
        "seed-only": {"train_size": entries[0]["train_size"], "added": 0,
                      "test_accuracy": entries[0]["test_accuracy"], "test_correct": entries[0]["test_correct"]},
        "llm2llm": {"train_size": entries[-1]["train_size"], "added": budget,
                    "test_accuracy": entries[-1]["test_accuracy"], "test_correct": entries[-1]["test_correct"],
                    "per_iteration": [e["test_accuracy"] for e in entries]},
    }
    aug_path = out_dir / "auggpt" / "examples.jsonl"
    if aug_path.exists() and "auggpt examples" in log:
        rephrased = list(read_jsonl(aug_path))
    else:
        teacher_obj.log_path = out_dir / "auggpt" / "teacher_log.jsonl"
        result = auggpt(task, [{k: v for k, v in s.items() if k != "origin"} for s in seeds], teacher_obj, budget,
                        seed=seed, max_new_tokens=teacher_max_new_tokens, progress=progress)
        write_jsonl(out_dir / "auggpt" / "rejected.jsonl", result["rejected"])
        rephrased = result["examples"]
        write_jsonl(aug_path, rephrased)
        log.append({"n": len(rephrased)}, key="auggpt examples")
    methods["auggpt"] = train_and_test("auggpt", seeds + rephrased)
    methods["eda"] = train_and_test("eda", seeds + augment(seeds, budget, seed=seed, key=task.key))
    comparison = {"dataset": dataset, "seed_size": len(seeds), "iterations": iterations, "budget": budget,
                  "test_size": len(test), "teacher": summary["teacher"], "methods": methods,
                  "hardware": summary.get("hardware")}
    atomic_write_json(out_dir / "comparison.json", comparison)
    return comparison
