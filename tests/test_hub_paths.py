"""Hub branches of the data loaders, offline: the single function that calls the hub is patched, and each test
checks the id, config and split asked for and the records converted to the course's schema."""
from __future__ import annotations

import pytest

from helpers import data as data_module
from helpers.data import DataNotAvailableError, load_safeedit

from test_harness import _short_record


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
    monkeypatch.setattr(data_module, "_from_hub", hub)
    records = load_safeedit(which)
    assert hub.calls == [("zjunlp/SafeEdit", (), {"split": split})]
    assert [r["id"] for r in records] == list(range(count)) and records[0] == rows[0]
    assert [r["id"] for r in load_safeedit(which, limit=2)] == [0, 1]


def test_gated_safeedit_says_how_to_get_access(no_data_folder, monkeypatch):
    monkeypatch.setattr(data_module, "_from_hub", _FakeHub([], error=OSError("401 Client Error: this dataset is gated")))
    with pytest.raises(DataNotAvailableError, match=r"gated dataset 'zjunlp/SafeEdit' was refused.*HF_TOKEN"):
        load_safeedit("sample")
    monkeypatch.setattr(data_module, "_from_hub", _FakeHub([], error=ConnectionError("no network")))
    with pytest.raises(DataNotAvailableError) as info:
        load_safeedit("sample")
    assert "HF_TOKEN" not in str(info.value)  # an unreachable hub is not an access problem


def test_hub_records_are_validated(no_data_folder, monkeypatch):
    bad = [dict(_short_record(0), **{"safe generation": None})]
    monkeypatch.setattr(data_module, "_from_hub", _FakeHub(bad))
    with pytest.raises(ValueError, match="zjunlp/SafeEdit"):
        load_safeedit("official", split="test")
