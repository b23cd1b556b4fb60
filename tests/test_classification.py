"""Chapter 08: classification tasks, label-constrained prediction, teacher-reply validation, AugGPT budget."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from helpers.common.datasets import DataNotAvailableError
from helpers.common.teacher import Teacher, get_teacher
from helpers.llm2llm.auggpt import auggpt, rephrase_prompt
from helpers.llm2llm.classification import ClassificationTask, OfflineClassificationTeacher, make_task
from helpers.llm2llm.datasets import LABELS
from helpers.llm2llm.label_scoring import normalise_label, score_labels
from helpers.llm2llm.task import get_task

DOCUMENTED = {
    "sst2": {"negative", "positive"},
    "trec": {"ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"},
    "snips": {"AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook", "SearchCreativeWork",
              "SearchScreeningEvent"},
}

CASE = {"text": "The court held that the statute applies. See Smith v. Jones (<HOLDING>).",
        "choices": ["holding that a contract needs consideration", "holding that the statute applies retroactively",
                    "holding that venue was proper", "holding that the claim was time-barred",
                    "holding that the evidence was admissible"],
        "label": "1"}


# ------------------------------------------------------------------------------------------------
# Loaders and label sets
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_loaders_give_the_documented_label_sets(name, shared_data):
    task = get_task(name)
    assert isinstance(task, ClassificationTask) and task.name == name
    assert set(task.labels) == DOCUMENTED[name] == set(LABELS[name])
    for split in ("train", "test"):
        records = task.load(split)
        assert {r["label"] for r in records} == DOCUMENTED[name], split
        assert all(isinstance(r["text"], str) and r["text"].strip() for r in records)
    assert task.test_keys and len(task.test_keys) > 100  # loading test registers its items


def test_casehold_is_hub_only_with_a_clear_message():
    task = make_task("casehold")
    assert task.labels == ["0", "1", "2", "3", "4"]
    try:
        records = task.load("test", limit=3)
    except DataNotAvailableError as err:  # offline (CI): says where it comes from
        assert "casehold/casehold" in str(err) and "hub" in str(err)
    else:  # pragma: no cover - only with the hub reachable
        assert all(r["label"] in task.labels and len(r["choices"]) == 5 for r in records)


def test_seed_sampling_is_stratified_and_seeded(shared_data):
    task = make_task("trec")
    train = task.load("train")
    seeds = task.sample_seeds(train, 12, seed=0)
    assert Counter(r["label"] for r in seeds) == {label: 2 for label in task.labels}
    assert seeds == task.sample_seeds(train, 12, seed=0)
    assert seeds != task.sample_seeds(train, 12, seed=1)


# ------------------------------------------------------------------------------------------------
# Label mapping never yields an invalid label
# ------------------------------------------------------------------------------------------------
def test_normalise_label_maps_to_a_valid_label_or_none():
    labels = LABELS["trec"]
    assert normalise_label("NUM", labels) == "NUM"
    assert normalise_label(" num. ", labels) == "NUM"
    assert normalise_label("**HUM** (a person)", labels) == "HUM"
    assert normalise_label("LOC or HUM", labels) is None  # ambiguous
    assert normalise_label("NUMBER", labels) is None  # not a whole-word label
    assert normalise_label("Positive.", LABELS["sst2"]) == "positive"
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.*:-"
    for name, labels in LABELS.items():
        for _ in range(300):
            noise = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
            text = rng.choice([noise, noise + rng.choice(labels), rng.choice(labels).lower() + " " + noise])
            assert normalise_label(text, labels) in labels + [None]


def test_label_constrained_prediction_always_gives_a_valid_label(embedded, shared_data):
    model, tokenizer = embedded
    for name in ("sst2", "snips"):
        task = make_task(name)
        records = task.load("test", limit=6)
        odd = [{"text": "", "label": task.labels[0]}, {"text": "?" * 300, "label": task.labels[-1]},
               {"text": " ".join(task.labels), "label": task.labels[0]},
               {"text": "Answer: not a label at all", "label": task.labels[-1]}]
        results = task.predict(model, tokenizer, records + odd, batch_size=4, progress=False)
        assert len(results) == len(records) + len(odd)
        for record, result in zip(records + odd, results):
            assert result["prediction"] in task.labels
            assert result["correct"] == (result["prediction"] == record["label"])
            assert set(result["scores"]) == set(task.labels)
            assert result["prediction"] == max(result["scores"], key=result["scores"].get)
            assert all(score < 0 for score in result["scores"].values())  # log-probabilities


def test_cached_label_scores_equal_a_full_forward_pass(embedded, shared_data, monkeypatch):
    """In float32 (the cache is an exact rewrite of the full pass; bf16 autocast would round the two differently)."""
    import torch

    from helpers.common.training import IGNORE_INDEX, encode_example

    monkeypatch.setenv("HELPERS_DTYPE", "float32")
    model, tokenizer = embedded
    task = make_task("trec")
    records = task.load("test", limit=3)
    prompts = [task.prompt(r) for r in records]
    cached = score_labels(model, tokenizer, prompts, task.labels, batch_size=3, progress=False)
    for prompt, row in zip(prompts, cached):
        for label, score in zip(task.labels, row):
            enc = encode_example(tokenizer, prompt, label)
            ids = torch.tensor([enc["input_ids"]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
            full = sum(float(logp[i - 1, ids[0, i]]) for i, lab in enumerate(enc["labels"]) if lab != IGNORE_INDEX)
            assert score == pytest.approx(full, abs=2e-3)


# ------------------------------------------------------------------------------------------------
# Teacher prompts and validation
# ------------------------------------------------------------------------------------------------
def _task_with(name: str, test_texts=("a test sentence that must never be trained on",)) -> ClassificationTask:
    task = make_task(name)
    task.forbid([{"text": t, "label": task.labels[0]} for t in test_texts])
    return task


def test_teacher_prompt_names_the_seed_label_and_the_wrong_answer():
    task = make_task("trec")
    seed = {"text": "How far is it from Denver to Aspen ?", "label": "NUM"}
    prompt = task.teacher_prompt(seed, student_output="LOC")
    assert "Text: How far is it from Denver to Aspen ?" in prompt and "Label: NUM" in prompt
    assert "'LOC'" in prompt and "also NUM" in prompt


def test_parse_accepts_a_valid_new_example_and_rejects_with_reasons():
    task = _task_with("sst2")
    seed = {"text": "a gorgeous , witty , seductive movie that rewards every minute of patience from its audience .",
            "label": "positive"}
    ok, bad = task.parse_teacher_reply("Text: the cast is terrific and the ending lands beautifully .\n"
                                       "Label: positive", seed)
    assert bad == [] and len(ok) == 1
    assert ok[0] == {"text": "the cast is terrific and the ending lands beautifully .", "label": "positive",
                     "origin": "generated", "parent": task.key(seed)}
    cases = {
        "Sure! Here is a great example.": "malformed: no 'Text:'",
        "Text: \nLabel: positive": "malformed: empty text",
        "Text: <the new movie-review sentence>\nLabel: positive": "placeholder",
        "Text: " + "word " * 80 + "\nLabel: positive": "too long",
        "Text: a dreary , lifeless mess .\nLabel: negative": "differs from the seed's label",
        "Text: a dreary , lifeless mess .\nLabel: neutral": "invalid label",
        "Text: A gorgeous, witty, seductive movie that rewards every minute of patience from its audience!\n"
        "Label: positive": "copy of the seed",  # case and punctuation do not make it new
        "Text: a gorgeous , witty , seductive movie that truly rewards every minute of patience from its "
        "audience .\nLabel: positive": "near-copy",
        "Text: a test sentence that must never be trained on\nLabel: positive": "is a test item",
        "Text: the cast is terrific and the ending lands beautifully .\nLabel: positive": "duplicate",
    }
    for reply, reason in cases.items():
        accepted, rejected = task.parse_teacher_reply(reply, seed)
        assert accepted == [], reply
        assert len(rejected) == 1 and reason in rejected[0]["reason"], (reply, rejected)
    # a missing Label line inherits the seed's label; only the first example of a reply is read (the prompt
    # asks for ONE): a small model that repeats the block to its budget gives one verdict, not one per repeat
    ok, bad = task.parse_teacher_reply("Text: an utterly charming film .\nText: a charming delight .\n"
                                       "Label: negative\n" + "Text: a charming delight .\n" * 50, seed)
    assert [r["text"] for r in ok] == ["an utterly charming film ."] and bad == []
    ok, bad = task.parse_teacher_reply("Text: a dreary mess .\nLabel: negative\n" + "Text: x\n" * 50, seed)
    assert ok == [] and len(bad) == 1 and "differs" in bad[0]["reason"]


def test_parse_casehold_needs_five_holdings():
    task = _task_with("casehold", test_texts=())
    new = ("Context: The panel agreed that the rule reaches past conduct. See Doe v. Roe (<HOLDING>).\n"
           + "\n".join(f"Holding {i}: holding number {i} of the new case" for i in range(5)) + "\nAnswer: 1")
    ok, bad = task.parse_teacher_reply(new, CASE)
    assert bad == [] and ok[0]["label"] == "1" and len(ok[0]["choices"]) == 5
    ok, bad = task.parse_teacher_reply(new.replace("Holding 3:", "Note:"), CASE)
    assert ok == [] and "holdings 0-4" in bad[0]["reason"]
    ok, bad = task.parse_teacher_reply(new.replace("Answer: 1", "Answer: 3").replace("Roe", "Poe"), CASE)
    assert ok == [] and "differs" in bad[0]["reason"]
    ok, bad = task.parse_teacher_reply("Context: A rephrased citing context (<HOLDING>).\nAnswer: 1", CASE,
                                       rephrase=True)  # AugGPT keeps the seed's holdings
    assert ok and ok[0]["choices"] == CASE["choices"]
    assert "Answer with the number only" in task.prompt(CASE) and task.target(CASE) == "1"


@pytest.mark.parametrize("name", ["sst2", "trec", "snips", "casehold"])
def test_offline_teacher_writes_valid_new_examples(name, tmp_path):
    task = _task_with(name, test_texts=())
    seed = CASE if name == "casehold" else {
        "sst2": {"text": "the acting is wooden and the story drags on forever", "label": "negative"},
        "trec": {"text": "What city hosted the first modern Olympic games ?", "label": "LOC"},
        "snips": {"text": "will it rain in boston tomorrow afternoon", "label": "GetWeather"},
    }[name]
    log = tmp_path / "teacher.jsonl"
    teacher = get_teacher("offline-classification", log_path=log)
    assert isinstance(teacher, OfflineClassificationTeacher)
    replies = teacher.complete([task.teacher_prompt(seed, "x"), rephrase_prompt(task, seed)], seed=0)
    generated, rejected = task.parse_teacher_reply(replies[0], seed)
    rephrased, rejected2 = task.parse_teacher_reply(replies[1], seed, rephrase=True)
    assert rejected == [] and rejected2 == [], (replies, rejected, rejected2)
    for record in generated + rephrased:
        assert record["label"] == seed["label"] and record["text"] != seed["text"]
    assert len(log.read_text().splitlines()) == 2
    assert teacher.complete(["no example here"])[0].startswith("I could not")


# ------------------------------------------------------------------------------------------------
# AugGPT at an equal data budget
# ------------------------------------------------------------------------------------------------
SEEDS = [{"text": t, "label": lab} for t, lab in [
    ("what a wonderful and moving film", "positive"), ("the plot is dull and the acting is wooden", "negative"),
    ("a clever , funny and warm script", "positive"), ("an ugly , pointless and tedious mess", "negative"),
    ("the best thriller of the year", "positive")]]


def test_auggpt_spends_exactly_the_budget_on_every_seed(tmp_path):
    task = _task_with("sst2", test_texts=())
    teacher = get_teacher("offline-classification", log_path=tmp_path / "log.jsonl")
    result = auggpt(task, SEEDS, teacher, budget=12, seed=0, progress=False)
    assert result["accepted"] == len(result["examples"]) == 12
    shares = sorted(result["per_seed"].values())
    assert shares[0] >= 2 and shares[-1] - shares[0] <= 1  # every seed rephrased, evenly
    assert all(r["origin"] == "auggpt" for r in result["examples"])
    assert len({task.key(r) for r in result["examples"]}) == 12  # no duplicates
    assert result["teacher_calls"] == len((tmp_path / "log.jsonl").read_text().splitlines())
    assert task.known_keys == set()  # AugGPT leaves the task's dedup state as it found it


class _FailsOnDullTeacher(Teacher):
    """Never rephrases the 'dull' seed validly: AugGPT must move its share to the other seeds."""

    name = "fails-on-dull"

    def _complete(self, prompts, **settings):
        inner = OfflineClassificationTeacher()
        return ["I will not." if "dull" in p else inner._one(p, settings["seed"], 0.7) for p in prompts]


def test_auggpt_redistributes_the_share_of_a_failing_seed():
    task = _task_with("sst2", test_texts=())
    result = auggpt(task, SEEDS, _FailsOnDullTeacher(), budget=10, seed=1, max_rounds=6, progress=False)
    assert result["accepted"] == 10
    dull = task.key(SEEDS[1])
    assert result["per_seed"][dull] == 0
    assert any(r["reason"].startswith("malformed") and r["parent"] == dull for r in result["rejected"])
    assert json.dumps(result)  # serialisable for the notebook's logs


# ------------------------------------------------------------------------------------------------
# The loop on a classification set: CLI summary, and AugGPT / EDA at LLM2LLM's budget
# ------------------------------------------------------------------------------------------------
def test_llm2llm_cli_runs_on_sst2_with_the_gsm8k_summary(shared_data, tmp_path, capsys):
    from helpers.cli import main

    out = tmp_path / "run"
    # lr 0: the student stays the base model, which calls almost everything positive, so the negative
    # seeds are wrong and reach the (offline stand-in) teacher
    code = main(["llm2llm", "--dataset", "sst2", "--seed-size", "4", "--iterations", "1", "--test-size", "4",
                 "--epochs", "1", "--lr", "0", "--batch-size", "4", "--train-layers", "1", "--evaluate-on", "seed",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"].startswith("offline-classification")
    first, second = summary["iterations"]
    for entry in summary["iterations"]:
        assert {"iteration", "train_size", "wrong", "new_examples", "test_accuracy"} <= set(entry)
        assert 0 <= entry["test_accuracy"] <= 1
    assert first["wrong"] > 0 and first["new_examples"] > 0
    assert second["train_size"] == first["train_size"] + first["new_examples"]
    seeds = {json.loads(line)["text"]: json.loads(line) for line in (out / "seed.jsonl").read_text().splitlines()}
    wrong = {json.loads(line)["key"] for line in (out / "iteration_00" / "train_predictions.jsonl").read_text().splitlines()
             if not json.loads(line)["correct"]}
    for line in (out / "iteration_00" / "new_examples.jsonl").read_text().splitlines():
        new = json.loads(line)
        assert new["parent"] in wrong and new["label"] in ("negative", "positive")
        assert new["text"] not in seeds


def test_auggpt_and_eda_get_the_same_budget_as_llm2llm(embedded, shared_data, tmp_path):
    from helpers.llm2llm.compare import compare_methods

    settings = dict(out_dir=tmp_path, seed_size=4, iterations=1, test_size=4, student=embedded, epochs=1, lr=0.0,
                    batch_size=4, train_layers=1, evaluate_on="seed", progress=False)
    result = compare_methods("sst2", **settings)
    summary = json.loads((tmp_path / "llm2llm" / "summary.json").read_text())
    added = sum(entry["new_examples"] or 0 for entry in summary["iterations"])
    assert result["budget"] == added > 0
    methods = result["methods"]
    assert methods["seed-only"]["train_size"] == 4
    assert methods["llm2llm"]["train_size"] == methods["auggpt"]["train_size"] == methods["eda"]["train_size"] == 4 + added
    for method, origin in (("auggpt", "auggpt"), ("eda", "eda")):
        rows = [json.loads(line) for line in (tmp_path / method / "train.jsonl").read_text().splitlines()]
        assert sum(r.get("origin") == origin for r in rows) == added
    # the seed-only number is LLM2LLM's iteration 0, and a rerun reuses every saved result
    assert methods["seed-only"]["test_accuracy"] == summary["iterations"][0]["test_accuracy"]
    assert compare_methods("sst2", **settings) == result


def test_grid_rows_cover_every_method_seed_and_iteration_and_resume(embedded, shared_data, tmp_path, monkeypatch):
    import helpers.common.training
    from helpers.llm2llm.grid import run_grid

    out, work = tmp_path / "grid.json", tmp_path / "runs"
    settings = dict(iterations=2, out=out, work=work, seed_sizes={"sst2": 4}, test_size=4, student=embedded,
                    epochs=1, lr=0.0, batch_size=4, train_layers=1, evaluate_on="seed", progress=False)
    results = run_grid(["sst2"], [0, 1], **settings)
    rows = results["rows"]
    assert results["complete"] and json.loads(out.read_text()) == results
    cells = {(r["seed"], r["method"], r["iteration"]) for r in rows}
    expected = {(s, "seed-only", 0) for s in (0, 1)} | {(s, m, k) for s in (0, 1) for m in ("llm2llm", "auggpt", "eda")
                                                       for k in (1, 2)}
    assert cells == expected and len(rows) == len(expected)
    assert all(r["n_test"] == 4 and r["seed_size"] == 4 and 0 <= r["test_accuracy"] <= 1 for r in rows)
    for seed in (0, 1):  # the same data budget per round, and LLM2LLM's rows are its run's iterations
        summary = json.loads((work / "sst2" / f"seed_{seed}" / "llm2llm" / "summary.json").read_text())
        for k in (1, 2):
            sizes = {r["method"]: r["train_size"] for r in rows if r["seed"] == seed and r["iteration"] == k}
            assert sizes["llm2llm"] == sizes["auggpt"] == sizes["eda"] == summary["iterations"][k]["train_size"]
            llm = [r for r in rows if (r["seed"], r["method"], r["iteration"]) == (seed, "llm2llm", k)][0]
            assert llm["test_accuracy"] == summary["iterations"][k]["test_accuracy"]
    seed_sets = [json.loads((work / "sst2" / f"seed_{s}" / "llm2llm" / "seed.jsonl").read_text().splitlines()[0])
                 for s in (0, 1)]
    assert seed_sets[0] != seed_sets[1], "each random seed draws its own seed set"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(helpers.common.training, "finetune", no_training)
    assert run_grid(["sst2"], [0, 1], **settings)["rows"] == rows
