"""The safe arithmetic evaluator and the GSM8K solution verifier (chapter 07)."""
from __future__ import annotations

import builtins
from fractions import Fraction

import pytest

from helpers.llm2llm.arithmetic import (
    UnsafeExpressionError,
    check_annotations,
    check_inline_equations,
    evaluate,
    format_number,
    matches,
    parse_decimal,
    parse_number,
    verify_solution,
)

NATALIA = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
           "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")


@pytest.mark.parametrize("expression, value", [
    ("48/2", 24), ("1/3*90", 30), ("2^3", 8), ("2**10", 1024), ("5 x $6", 30), ("(3+4)*2", 14),
    (".5*10", 5), ("7//2", 3), ("7%3", 1), ("-4+10", 6), ("1,000*3", 3000), ("0.1+0.2", Fraction(3, 10)),
    ("12 × 3 ÷ 4", 9),
])
def test_evaluate_is_exact(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')", "a+1", "abs(-3)", "(1).real", "[1, 2]", "1 if 1 else 2", "1 < 2",
    "lambda: 1", "'ab'*3", "2**0.5", "9**9**9", "10**12*10**12", "1e400", "", "True+1", "x" * 300,
])
def test_evaluate_refuses_anything_but_arithmetic(expression):
    with pytest.raises(UnsafeExpressionError):
        evaluate(expression)


def test_division_by_zero_is_reported():
    with pytest.raises(ZeroDivisionError):
        evaluate("5/(3-3)")


def test_evaluator_never_calls_eval(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec must not be used")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert evaluate("(48+24)/2") == 36
    assert verify_solution(NATALIA).ok


def test_numbers_parse_and_format():
    assert parse_number("$1,250.50") == Fraction(250100, 200)
    assert parse_number("50%") == 50
    assert parse_number("twelve") is None
    assert format_number(Fraction(5, 2)) == "2.5"
    assert format_number(Fraction(24)) == "24"
    assert matches(Fraction("0.67"), Fraction(2, 3)) and not matches(Fraction(3), Fraction(7, 2))


def test_parse_decimal_is_the_shared_number_parser():
    from decimal import Decimal

    from helpers.llm2llm.gsm8k import normalize_number

    assert parse_decimal("-$2") == Decimal(-2) and normalize_number("-$2") == "-2"
    assert parse_decimal("1,000.") == Decimal(1000)
    assert parse_decimal("5%") is None and parse_decimal("5%", percent=True) == Decimal(5)
    assert parse_decimal("1" * 41) is None and normalize_number("9" * 50) is None   # no huge numbers
    assert parse_decimal("nan") is None and parse_decimal("inf") is None and parse_decimal("") is None


def test_annotations_are_recomputed():
    good = check_annotations(NATALIA)
    assert [a.ok for a in good] == [True, True] and good[0].computed == 24
    wrong = check_annotations("She sold 48/2 = <<48/2=25>>25 clips.")
    assert not wrong[0].ok and "48/2 = 24, not 25" in wrong[0].reason
    mismatch = check_annotations("She sold <<48/2=24>>26 clips.")
    assert not mismatch[0].ok and "says 26" in mismatch[0].reason
    assert not check_annotations("<<abs(-2)=2>>2")[0].ok
    assert check_annotations("<<2/3=0.67>>0.67")[0].ok


def test_inline_prose_computations_are_checked():
    steps = check_inline_equations("She bought 5*7=$<<5*7=35>>35 of food and 20/4 = $5 of sweets.")
    assert [(s.expression.strip(), s.ok) for s in steps] == [("5*7", True), ("20/4", True)]
    assert not check_inline_equations("so 3*4 = 13 apples")[0].ok


def test_verify_solution_accepts_gold_and_rejects_inconsistent_solutions():
    assert verify_solution(NATALIA).ok and verify_solution(NATALIA).final == "72"
    wrong_step = verify_solution(NATALIA.replace("<<48+24=72>>72", "<<48+24=74>>74").replace("#### 72", "#### 74"))
    assert not wrong_step.ok and any("48+24 = 72, not 74" in r for r in wrong_step.reasons)
    wrong_final = verify_solution(NATALIA.replace("#### 72", "#### 70"))
    assert not wrong_final.ok and any("final answer 70" in r for r in wrong_final.reasons)
    assert any("no final answer" in r for r in verify_solution(NATALIA.split("####")[0]).reasons)
    assert any("no calculator annotation" in r for r in verify_solution("It is 5.\n#### 5").reasons)


def test_most_gsm8k_gold_solutions_verify(shared_data):
    from helpers.llm2llm.gsm8k import load_gsm8k

    records = load_gsm8k("train", limit=200)
    passed = sum(verify_solution(r["answer"]).ok for r in records)
    assert passed >= 0.85 * len(records), passed
