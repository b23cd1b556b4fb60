"""Hub branches of the data loaders, offline: the single function that calls the hub is patched, and each test
checks the id, config and split asked for and the records converted to the course's schema."""
from __future__ import annotations

import re

import pytest
from test_harness import _short_record

from helpers.common.datasets import DataNotAvailableError
from helpers.llm2llm import datasets as llm2llm_datasets
from helpers.llm2llm import gsm8k as gsm8k_module
from helpers.llm2llm.classification import make_task
from helpers.llm2llm.datasets import load_casehold, load_snips, snips_intent
from helpers.safeedit import data as safeedit_data
from helpers.safeedit import general_data

#: every module whose loaders fall back to the hub (each imports ``_from_hub`` from helpers.common.datasets)
HUB_MODULES = (llm2llm_datasets, gsm8k_module, safeedit_data, general_data)


def _patch_hub(monkeypatch, fake):
    for module in HUB_MODULES:
        monkeypatch.setattr(module, "_from_hub", fake)
from helpers.safeedit.data import load_safeedit


class _FakeHub:
    def __init__(self, rows, error: Exception | None = None):
        self.rows, self.error, self.calls = rows, error, []

    def __call__(self, hub_id, *args, what, local_hint, **kwargs):
        self.calls.append((hub_id, args, kwargs))
        if self.error is not None:
            raise DataNotAvailableError(f"{what} is not available") from self.error
        return self.rows


@pytest.fixture
def no_data_folder(monkeypatch):
    monkeypatch.delenv("HELPERS_DATA_DIR", raising=False)


@pytest.mark.parametrize("which, split, count", [("sample", "test", 7), ("three", "train", 3)])
def test_safeedit_sample_and_three_come_from_the_hub_without_the_data_folder(no_data_folder, monkeypatch,
                                                                            which, split, count):
    rows = [_short_record(i) for i in range(10)]
    hub = _FakeHub(rows)
    _patch_hub(monkeypatch, hub)
    records = load_safeedit(which)
    assert hub.calls == [("zjunlp/SafeEdit", (), {"split": split})]
    assert [r["id"] for r in records] == list(range(count)) and records[0] == rows[0]
    assert [r["id"] for r in load_safeedit(which, limit=2)] == [0, 1]


def test_gated_safeedit_says_how_to_get_access(no_data_folder, monkeypatch):
    _patch_hub(monkeypatch, _FakeHub([], error=OSError("401 Client Error: this dataset is gated")))
    with pytest.raises(DataNotAvailableError, match=r"gated dataset 'zjunlp/SafeEdit' was refused.*HF_TOKEN"):
        load_safeedit("sample")
    _patch_hub(monkeypatch, _FakeHub([], error=ConnectionError("no network")))
    with pytest.raises(DataNotAvailableError) as info:
        load_safeedit("sample")
    assert "HF_TOKEN" not in str(info.value)  # an unreachable hub is not an access problem


def test_hub_records_are_validated(no_data_folder, monkeypatch):
    bad = [dict(_short_record(0), **{"safe generation": None})]
    _patch_hub(monkeypatch, _FakeHub(bad))
    with pytest.raises(ValueError, match="zjunlp/SafeEdit"):
        load_safeedit("official", split="test")


# --- SNIPS (benayas/snips: columns "text", "category"; splits train and test) ------------------------------
SNIPS_HUB_ROWS = [
    {"text": "add this tune to my road trip playlist ", "category": "AddToPlaylist"},
    {"text": "will it snow in boston tomorrow", "category": "GET_WEATHER"},
    {"text": "   ", "category": "PlayMusic"},  # an empty request is dropped, as in the data folder
    {"text": "book a table for two at a sushi bar", "category": "bookrestaurant"},
    {"text": "find the movie schedule near me", "category": "Search Screening Event"},
]
SNIPS_RECORDS = [
    {"text": "add this tune to my road trip playlist", "label": "AddToPlaylist"},
    {"text": "will it snow in boston tomorrow", "label": "GetWeather"},
    {"text": "book a table for two at a sushi bar", "label": "BookRestaurant"},
    {"text": "find the movie schedule near me", "label": "SearchScreeningEvent"},
]


@pytest.mark.parametrize("split", ["train", "test"])
def test_snips_comes_from_the_hub_without_the_data_folder(no_data_folder, monkeypatch, split):
    hub = _FakeHub(SNIPS_HUB_ROWS)
    _patch_hub(monkeypatch, hub)
    assert load_snips(split) == SNIPS_RECORDS
    assert hub.calls == [("benayas/snips", (), {"split": split})]
    assert load_snips(split, limit=2) == SNIPS_RECORDS[:2]


def test_snips_hub_records_feed_the_chapter_task(no_data_folder, monkeypatch):
    _patch_hub(monkeypatch, _FakeHub(SNIPS_HUB_ROWS))
    task = make_task("snips")
    assert task.load("test", limit=1) == SNIPS_RECORDS[:1]
    assert len(task.test_keys) == len(SNIPS_RECORDS)  # the whole hub test split is registered as test items
    assert {r["label"] for r in task.load("train")} <= set(task.labels)


def test_snips_hub_label_that_is_no_intent_is_an_error(no_data_folder, monkeypatch):
    rows = SNIPS_HUB_ROWS + [{"text": "hello there", "category": "Greeting"}]
    _patch_hub(monkeypatch, _FakeHub(rows))
    with pytest.raises(ValueError, match=r"benayas/snips \(train\): unknown SNIPS intent label 'Greeting'"):
        load_snips("train")


def test_snips_intent_spellings():
    assert snips_intent("ADD_TO_PLAYLIST") == "AddToPlaylist"
    assert snips_intent("searchcreativework") == "SearchCreativeWork"
    assert snips_intent("Rate-Book") == "RateBook"
    with pytest.raises(ValueError, match="unknown SNIPS intent label 'Rate'"):
        snips_intent("Rate")


def test_snips_dev_is_not_asked_of_the_hub(no_data_folder, monkeypatch):
    hub = _FakeHub(SNIPS_HUB_ROWS)
    _patch_hub(monkeypatch, hub)
    with pytest.raises(DataNotAvailableError, match=r"SNIPS dev split.*snips/dev/\{seq.in,label\}.*'benayas/snips'"):
        load_snips("dev")
    assert hub.calls == []


def test_snips_data_folder_wins_over_the_hub(tmp_path, monkeypatch):
    folder = tmp_path / "snips" / "test"
    folder.mkdir(parents=True)
    (folder / "seq.in").write_text("play some jazz\nrate this book five stars\n", encoding="utf-8")
    (folder / "label").write_text("PlayMusic\nRateBook\n", encoding="utf-8")
    monkeypatch.setenv("HELPERS_DATA_DIR", str(tmp_path))
    hub = _FakeHub(SNIPS_HUB_ROWS)
    _patch_hub(monkeypatch, hub)
    assert load_snips("test") == [{"text": "play some jazz", "label": "PlayMusic"},
                                  {"text": "rate this book five stars", "label": "RateBook"}]
    assert hub.calls == []


# --- CaseHOLD (casehold/casehold, config "all") -----------------------------------------------------------------
def _casehold_row(i: int, label) -> dict:
    row = {"example_id": i, "citing_prompt": f"Case {i} held that <HOLDING> and so on.", "label": label}
    row.update({f"holding_{j}": f"holding {j} of case {i}" for j in range(5)})
    return row


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_casehold_comes_from_the_hub(no_data_folder, monkeypatch, split):
    hub = _FakeHub([_casehold_row(0, "2"), _casehold_row(1, "0"), _casehold_row(2, "4")])
    _patch_hub(monkeypatch, hub)
    records = load_casehold(split)
    assert hub.calls == [("casehold/casehold", ("all",), {"split": split})]
    assert records[0] == {"text": "Case 0 held that <HOLDING> and so on.",
                          "choices": [f"holding {j} of case 0" for j in range(5)], "label": "2"}
    assert [r["label"] for r in records] == ["2", "0", "4"]
    assert len(load_casehold(split, limit=1)) == 1


def test_casehold_hub_records_feed_the_chapter_task(no_data_folder, monkeypatch):
    _patch_hub(monkeypatch, _FakeHub([_casehold_row(0, "3"), _casehold_row(1, "1")]))
    task = make_task("casehold")
    [record] = task.load("test", limit=1)
    assert record["label"] in task.labels and len(record["choices"]) == 5
    assert "\n4: holding 4 of case 0" in task.prompt(record) and task.target(record) == "3"


@pytest.mark.parametrize("label", ["5", "", None, "two"])
def test_casehold_label_outside_0_to_4_is_an_error(no_data_folder, monkeypatch, label):
    _patch_hub(monkeypatch, _FakeHub([_casehold_row(0, "1"), _casehold_row(1, label)]))
    with pytest.raises(ValueError, match=r"casehold/casehold \(test\): record #1 has label"):
        load_casehold("test")


# --- neither the data folder nor the hub: one clear sentence ----------------------------------------------------
def _hub_down(*args, **kwargs):
    raise ConnectionError("Couldn't reach the Hub (offline)")


MISSING = [  # loader, split, what the message must name
    (load_snips, "test", ("SNIPS", "snips/{train,dev,test}/{seq.in,label}", "'benayas/snips'")),
    (load_casehold, "test", ("CaseHOLD", "only on the Hugging Face hub", "'casehold/casehold'")),
    (llm2llm_datasets.load_sst2, "test", ("SST-2", "sst2/{train,dev,test}.tsv", "'stanfordnlp/sst2'")),
    (llm2llm_datasets.load_trec, "test", ("TREC", "trec/{train,test}.txt", "'CogComp/trec'")),
    (gsm8k_module.load_gsm8k, "test", ("GSM8K", "gsm8k/{train,test}.jsonl", "'openai/gsm8k'")),
]


@pytest.mark.parametrize("loader, split, names", MISSING, ids=[m[2][0] for m in MISSING])
def test_no_data_folder_and_no_hub_is_one_clear_sentence(tmp_path, monkeypatch, loader, split, names):
    import datasets

    monkeypatch.setenv("HELPERS_DATA_DIR", str(tmp_path))  # an empty data folder
    monkeypatch.setattr(datasets, "load_dataset", _hub_down)  # what _from_hub calls: the hub fails
    with pytest.raises(DataNotAvailableError) as info:
        loader(split)
    message = str(info.value)
    for name in names:
        assert name in message, (name, message)
    assert message.startswith(f"{names[0]} is not available") and "hub error: ConnectionError" in message
    if names[0] != "CaseHOLD":
        assert "HELPERS_DATA_DIR=" in message  # the folder that was looked in
    assert "\n" not in message and message.endswith(".") and not re.search(r"\.\s+[A-Z]", message)  # one sentence
    assert isinstance(info.value.__cause__, ConnectionError)


@pytest.mark.parametrize("name", ["sst2", "trec", "snips", "casehold"])
def test_chapter_task_load_raises_the_clear_error_not_a_key_error(tmp_path, monkeypatch, name):
    import datasets

    monkeypatch.setenv("HELPERS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "load_dataset", _hub_down)
    with pytest.raises(DataNotAvailableError, match=r"is not available.*Hugging Face hub"):
        make_task(name).load("test")
