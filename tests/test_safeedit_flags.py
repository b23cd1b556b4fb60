"""One flag set for the SafeEdit commands (safeedit-eval, safeedit-table, dinm-sweep): the same names, the same
defaults where the commands do not differ on purpose, and one KEY=VALUE syntax for options."""
from __future__ import annotations

import argparse

import pytest

from helpers.cli import build_parser
from helpers.detox.sweep import SWEEP_BASE, parse_sweep_config
from helpers.detox.table import _check_table_args

COMMANDS = ("safeedit-eval", "safeedit-table", "dinm-sweep")
SHARED = ("data", "split", "limit", "model", "judge", "second_judge", "allow_judge_overlap", "max_new_tokens",
          "max_input_tokens", "general", "general_limit", "seed")
#: the defaults that differ on purpose: the sweep tunes on a few validation records with general performance on
DIFFERENT = {"dinm-sweep": {"data": "built", "split": "validation", "limit": 3, "general": "kqa,csum"}}


def _parse(command, *argv) -> argparse.Namespace:
    return build_parser().parse_args([command, *argv])


def test_the_commands_share_one_flag_set():
    parsed = {command: vars(_parse(command)) for command in COMMANDS}
    for command, values in parsed.items():
        missing = [name for name in SHARED if name not in values]
        assert not missing, (command, missing)
    for name in SHARED:
        defaults = {c: parsed[c][name] for c in COMMANDS if name not in DIFFERENT.get(c, {})}
        assert len(set(map(repr, defaults.values()))) == 1, (name, defaults)
    assert parsed["safeedit-eval"]["max_new_tokens"] is None  # the scale's budget, decided at run time
    assert parsed["dinm-sweep"]["data"] == "built" and parsed["dinm-sweep"]["split"] == "validation"


@pytest.mark.parametrize("command", COMMANDS)
def test_max_prompt_tokens_is_the_same_flag(command):
    assert _parse(command, "--max-prompt-tokens", "256").max_input_tokens == 256
    assert _parse(command, "--max-input-tokens", "256").max_input_tokens == 256


def test_sweep_config_reads_key_value_and_json_alike():
    assert parse_sweep_config("lr=5e-3,kl_weight=10") == parse_sweep_config('{"lr": 5e-3, "kl_weight": 10}') \
        == {**SWEEP_BASE, "lr": 5e-3, "kl_weight": 10}
    assert parse_sweep_config("suffix=false")["suffix"] is False
    with pytest.raises(SystemExit, match="--config must look like KEY=VALUE"):
        parse_sweep_config("lr")


def test_table_option_merges_over_method_options(shared_data):
    args = _parse("safeedit-table", "--data", "built", "--limit", "1", "--methods", "dinm,sft", "--judge", "keyword",
                  "--method-options", '{"dinm": {"steps": 5, "lr": 0.002}}', "--option", "dinm.lr=0.005",
                  "--option", "sft.epochs=2", "--train-limit", "1")
    *_, options = _check_table_args(args, ["dinm", "sft"])
    assert options == {"dinm": {"steps": 5, "lr": 0.005}, "sft": {"epochs": 2}}
