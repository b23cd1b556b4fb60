"""Resumable commands on RunLog: the main table (safeedit-table) resumes row by row from its log, keyed by the
table's settings; the LLM2LLM loop refuses a folder of other settings and validates before writing."""
from __future__ import annotations

import json

import pytest


def _fake_evaluate(calls):
    def evaluate(method, records, judge, model, tokenizer, **kwargs):
        calls.append(method.name)
        return {"judge": "keyword", "aggregate": {"DS": 1.0}, "by_judge": {}, "judges_info": {},
                "timings": {"prepare_seconds": 0.0, "generation_seconds": 0.0},
                "instances": [{"id": r["id"], "responses": {}, "labels": {}} for r in records]}
    return evaluate


@pytest.fixture
def table_env(monkeypatch):
    import torch

    import helpers.safeedit.harness

    calls = []
    monkeypatch.setattr(helpers.safeedit.harness, "evaluate_safeedit", _fake_evaluate(calls))
    return calls, torch.nn.Linear(2, 2)


RECORDS = [{"id": 1, "question": "q"}, {"id": 2, "question": "r"}]


def test_table_resumes_row_by_row_from_its_log(table_env, tmp_path, capsys):
    from helpers.detox.table import run_main_table, table_log_path

    calls, model = table_env
    out = tmp_path / "table.json"
    kwargs = dict(max_new_tokens=2, out=out, progress=False)
    run_main_table(model, None, RECORDS, "keyword", methods=["vanilla", "self-reminder"], **kwargs)
    assert calls == ["vanilla", "self-reminder"]
    log = table_log_path(out)
    assert log.name == "table.log.jsonl"
    assert [json.loads(line)["key"] for line in log.read_text().splitlines()] == ["vanilla", "self-reminder"]
    # a child process of the isolated table: one more method, the earlier rows come from the log
    table = run_main_table(model, None, RECORDS, "keyword", methods=["ft-l"], **kwargs)
    assert calls == ["vanilla", "self-reminder", "ft-l"] and list(table["rows"]) == ["vanilla", "self-reminder", "ft-l"]
    assert list(json.loads(out.read_text())["rows"]) == ["vanilla", "self-reminder", "ft-l"]
    # killed while appending: the torn line is skipped with a warning, the rest resumes
    with open(log, "a", encoding="utf-8") as handle:
        handle.write('{"run": "x", "key": "dp')
    run_main_table(model, None, RECORDS, "keyword", methods=["vanilla", "ft-l"], **kwargs)
    assert len(calls) == 3 and "incomplete" in capsys.readouterr().err
    # other settings (more new tokens) or other options of one method: only what changed runs again
    run_main_table(model, None, RECORDS, "keyword", methods=["vanilla"], **{**kwargs, "max_new_tokens": 3})
    assert calls[-1] == "vanilla" and len(calls) == 4
    run_main_table(model, None, RECORDS, "keyword", methods=["vanilla", "ft-l"],
                   method_options={"ft-l": {"steps": 2}}, **kwargs)
    assert calls[-1] == "ft-l" and len(calls) == 5
    assert all(json.loads(line) for line in log.read_text().splitlines())


def test_table_written_before_the_log_is_adopted(table_env, tmp_path):
    from helpers.detox.table import run_main_table, table_log_path

    calls, model = table_env
    out = tmp_path / "table.json"
    run_main_table(model, None, RECORDS, "keyword", methods=["vanilla"], max_new_tokens=2, out=out, progress=False)
    table_log_path(out).unlink()  # as an older version left it: the table only
    run_main_table(model, None, RECORDS, "keyword", methods=["vanilla", "ft-l"], max_new_tokens=2, out=out,
                   progress=False)
    assert calls == ["vanilla", "ft-l"]
    assert [json.loads(line)["key"] for line in table_log_path(out).read_text().splitlines()] == ["vanilla", "ft-l"]
    run_main_table(model, None, RECORDS, "keyword", methods=["vanilla"], max_new_tokens=2, out=out, progress=False,
                   resume=False)
    assert calls == ["vanilla", "ft-l", "vanilla"]
