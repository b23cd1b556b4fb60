"""Loaders on the course data folder, SafeEdit validation and GSM8K answer extraction."""
from __future__ import annotations

import json

import pytest

from helpers.common.datasets import DataNotAvailableError
from helpers.llm2llm.datasets import LABELS, load_snips, load_sst2, load_trec
from helpers.llm2llm.gsm8k import answers_match, extract_gold, extract_prediction, load_gsm8k, normalize_number
from helpers.safeedit.data import SAFEEDIT_CATEGORIES, SafeEditFormatError, load_safeedit, read_safeedit, write_safeedit
from helpers.safeedit.general_data import load_triviaqa, load_xsum


def test_gsm8k_train_count_and_gold(shared_data):
    train = load_gsm8k("train")
    assert len(train) == 7473
    assert train[0]["gold"] == "72"
    assert all(r["gold"] == extract_gold(r["answer"]) for r in train[:50])


def test_gsm8k_test_limit(shared_data):
    assert len(load_gsm8k("test", limit=5)) == 5
    assert len(load_gsm8k("test")) == 1000


def test_sst2_test(shared_data):
    test = load_sst2("test")
    assert len(test) == 872
    assert {r["label"] for r in test} == set(LABELS["sst2"])


def test_trec_test_six_labels(shared_data):
    test = load_trec("test")
    assert len(test) == 500
    assert {r["label"] for r in test} == set(LABELS["trec"])
    assert len(LABELS["trec"]) == 6


def test_snips_test_seven_intents(shared_data):
    test = load_snips("test")
    assert len(test) == 700
    assert {r["label"] for r in test} == set(LABELS["snips"])
    assert len(LABELS["snips"]) == 7


def test_safeedit_sample(shared_data):
    sample = load_safeedit("sample")
    assert len(sample) == 7
    assert {r["unsafety category"] for r in sample} <= set(SAFEEDIT_CATEGORIES)
    assert len(load_safeedit("three")) == 3


def test_general_performance_data(shared_data):
    trivia = load_triviaqa(limit=3)
    assert trivia[0]["question"] and not trivia[0]["question"].startswith("Question:")
    assert trivia[0]["answer"] in trivia[0]["aliases"]
    assert len(load_xsum(limit=2)) == 2


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPERS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotAvailableError, match="HELPERS_DATA_DIR"):
        load_snips("test")
    with pytest.raises(DataNotAvailableError, match="safeedit/SafeEdit_test_sample.json"):
        load_safeedit("sample")


# --- SafeEdit files that break the schema -------------------------------------------------------------
@pytest.fixture()
def sample_records(shared_data):
    return json.loads((shared_data / "safeedit" / "SafeEdit_test_sample.json").read_text())


def test_missing_field_names_file_record_and_field(tmp_path, sample_records):
    bad = tmp_path / "bad.json"
    del sample_records[2]["safe generation"]
    bad.write_text(json.dumps(sample_records))
    with pytest.raises(SafeEditFormatError) as err:
        read_safeedit(bad)
    message = str(err.value)
    assert str(bad) in message and "record id 2" in message and "'safe generation'" in message


def test_wrong_type_names_field(tmp_path, sample_records):
    bad = tmp_path / "bad.json"
    sample_records[4]["generalization test"]["test input of only harmful question"] = 17
    bad.write_text(json.dumps(sample_records))
    with pytest.raises(SafeEditFormatError, match=r"record id 4: field 'generalization test/test input of only "
                                                  r"harmful question' should be str, got int"):
        read_safeedit(bad)


def test_not_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 0,')
    with pytest.raises(SafeEditFormatError, match="not valid JSON"):
        read_safeedit(bad)


def test_bad_records_are_not_written(tmp_path, sample_records):
    out = tmp_path / "out.json"
    out.write_text("earlier work")
    sample_records[0]["id"] = "zero"
    with pytest.raises(SafeEditFormatError, match="'id' should be int"):
        write_safeedit(sample_records, out)
    assert out.read_text() == "earlier work"
    assert list(tmp_path.iterdir()) == [out]


def test_safeedit_round_trip(tmp_path, sample_records):
    out = write_safeedit(sample_records, tmp_path / "copy.json")
    assert read_safeedit(out) == sample_records


# --- GSM8K answer extraction ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
    ("#### 1,234", "1234"),
    ("The answer is $1,250.00.", "1250"),
    ("So she lost 5 dollars. The answer is -5", "-5"),
    ("He pays 3.50 per cup, so the answer is 10.5.", "10.5"),
    ("First 3 apples, then 4 more: 7 apples in total.", "7"),
    ("The total is \\boxed{42}", "42"),
    ("I don't know how to solve this.", None),
    ("", None),
    ("Answer: 0.75", "0.75"),
    ("It costs $.5 each, answer = 2", "2"),
    ("The answer is: 18 eggs. (Step 2 used 16 - 3 - 4 = 9.)", "18"),
    ("Temperatures fell to -12 degrees", "-12"),
    ("The answer is 1,000,000", "1000000"),
    ("They need 2.0 hours", "2"),
])
def test_extract_prediction(text, expected):
    assert extract_prediction(text) == expected


def test_numbers_and_matching():
    assert normalize_number("$3,000.10") == "3000.1"
    assert normalize_number("abc") is None
    assert answers_match("18.0", "18") and not answers_match(None, "18") and not answers_match("17", "18")
    with pytest.raises(ValueError, match="####"):
        extract_gold("no marker here")
