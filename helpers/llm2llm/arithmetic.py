"""A small, safe arithmetic evaluator and a checker for GSM8K calculator annotations.

GSM8K solutions carry *calculator annotations* such as ``<<48/2=24>>``: an expression, ``=`` and the
value the author claims. The official LLM2LLM code trusts whatever arithmetic the teacher writes; we
recompute every annotation instead. The expression is parsed with :mod:`ast` and only a whitelist of
node types is evaluated (numbers, ``+ - * / // %``, ``**`` with a small integer exponent, unary signs and
parentheses), in exact rational arithmetic (:class:`fractions.Fraction`, so ``1/3*90`` is exactly 30).
Names, calls, attributes, subscripts, comparisons … raise :class:`UnsafeExpressionError`. Nothing is ever
passed to ``eval()``.

>>> evaluate("48/2")
Fraction(24, 1)
>>> [a.ok for a in check_annotations("She sold 48/2 = <<48/2=24>>24 clips.")]
[True]
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

#: Largest absolute value any intermediate result may reach (guards against ``9**9**9``-style blow-ups).
MAX_MAGNITUDE = Fraction(10) ** 15
MAX_EXPONENT = 12
MAX_LENGTH = 200


class UnsafeExpressionError(ValueError):
    """The text is not a plain arithmetic expression (or is too large to evaluate safely)."""


_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: Fraction(a // b),
    ast.Mod: lambda a, b: a % b,
}


def parse_decimal(text: str, *, percent: bool = False) -> Decimal | None:
    """``"1,250.50"`` / ``"$3"`` / ``"-$2"`` / ``".5"`` → a finite :class:`Decimal`; ``None`` if no number.

    Commas, dollar signs, spaces and a trailing full stop are ignored; with ``percent=True`` a trailing ``%``
    too. Strings longer than 40 characters after cleaning are not numbers (no huge exponents)."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if percent and cleaned.endswith("%"):
        cleaned = cleaned[:-1]
    if not cleaned or len(cleaned) > 40:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def parse_number(text: str) -> Fraction | None:
    """``"1,250.50"`` / ``"$3"`` / ``".5"`` / ``"-2"`` / ``"5%"`` → an exact :class:`Fraction`; ``None`` if no number."""
    value = parse_decimal(text, percent=True)
    return None if value is None else Fraction(value)


def _normalise(expression: str) -> str:
    """Calculator-style notation → Python syntax: ``×``/``x`` → ``*``, ``÷`` → ``/``, ``^`` → ``**``,
    thousands separators and ``$`` removed."""
    text = expression.strip()
    text = text.replace("×", "*").replace("·", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
    text = text.replace("$", "")
    text = re.sub(r"(?<=[\d)])\s*[xX]\s*(?=[\d.(])", "*", text)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    return text


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic ``expression``; raises :class:`UnsafeExpressionError` for anything
    else (names, calls, huge powers, …) and :class:`ZeroDivisionError` for a division by zero."""
    if not isinstance(expression, str):
        raise UnsafeExpressionError(f"expected a string, got {type(expression).__name__}")
    text = _normalise(expression)
    if not text:
        raise UnsafeExpressionError("empty expression")
    if len(text) > MAX_LENGTH:
        raise UnsafeExpressionError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise UnsafeExpressionError(f"not an arithmetic expression: {expression!r}") from err
    return _eval_node(tree.body, expression)


def _eval_node(node: ast.AST, source: str) -> Fraction:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise UnsafeExpressionError(f"only numbers are allowed, found {node.value!r} in {source!r}")
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise UnsafeExpressionError(f"number out of range in {source!r}")
        value = Fraction(node.value) if isinstance(node.value, int) else Fraction(repr(node.value))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _eval_node(node.operand, source)
        value = operand if isinstance(node.op, ast.UAdd) else -operand
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval_node(node.left, source), _eval_node(node.right, source)
        value = _BINARY[type(node.op)](left, right)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _eval_node(node.left, source), _eval_node(node.right, source)
        if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
            raise UnsafeExpressionError(f"only small integer powers are allowed in {source!r}")
        if base == 0 and exponent < 0:
            raise ZeroDivisionError(f"0 to a negative power in {source!r}")
        value = base ** int(exponent)
    else:
        raise UnsafeExpressionError(f"{type(node).__name__} is not allowed in an arithmetic expression ({source!r})")
    if abs(value) > MAX_MAGNITUDE:
        raise UnsafeExpressionError(f"value too large in {source!r}")
    return value


def format_number(value: Fraction, max_decimals: int = 6) -> str:
    """A readable decimal string: ``Fraction(24)`` → ``"24"``, ``Fraction(5, 2)`` → ``"2.5"`` (rounded to
    ``max_decimals`` places for non-terminating values)."""
    if value.denominator == 1:
        return str(value.numerator)
    rounded = round(Decimal(value.numerator) / Decimal(value.denominator), max_decimals)
    text = format(rounded.normalize(), "f")
    return text


def matches(claimed: Fraction, computed: Fraction) -> bool:
    """Whether a claimed value agrees with the exact one: equal, or — when the claim has decimals —
    equal after rounding or truncating to that many decimals (``2/3=0.67`` is fine, ``7/2=3`` is not)."""
    if claimed == computed:
        return True
    decimals = _decimals(claimed)
    if decimals == 0:
        return False
    return abs(claimed - computed) < Fraction(1, 10 ** decimals)


def _decimals(value: Fraction) -> int:
    text = format_number(value, max_decimals=12)
    return len(text.split(".")[1]) if "." in text else 0


@dataclass
class Annotation:
    """One ``<<expression=claimed>>`` annotation with the recomputed value and a verdict."""

    text: str  # the whole annotation, brackets included
    expression: str
    claimed: str
    computed: Fraction | None
    ok: bool
    reason: str  # "" when ok
    start: int = 0
    end: int = 0

    def as_dict(self) -> dict:
        return {"text": self.text, "expression": self.expression, "claimed": self.claimed,
                "computed": None if self.computed is None else format_number(self.computed),
                "ok": self.ok, "reason": self.reason}


ANNOTATION = re.compile(r"<<([^<>]*)>>")


def check_annotation(inner: str) -> tuple[str, str, Fraction | None, bool, str]:
    """Check ``"48/2=24"``: ``(expression, claimed, computed, ok, reason)``."""
    if "=" not in inner:
        return inner, "", None, False, f"annotation <<{inner}>> has no '='"
    expression, claimed = inner.rsplit("=", 1)
    claimed_value = parse_number(claimed)
    if claimed_value is None:
        return expression, claimed, None, False, f"annotation <<{inner}>>: {claimed.strip()!r} is not a number"
    try:
        computed = evaluate(expression)
    except ZeroDivisionError:
        return expression, claimed, None, False, f"annotation <<{inner}>> divides by zero"
    except UnsafeExpressionError as err:
        return expression, claimed, None, False, f"annotation <<{inner}>> cannot be evaluated: {err}"
    if not matches(claimed_value, computed):
        return (expression, claimed, computed, False,
                f"annotation <<{inner}>> is wrong: {expression.strip()} = {format_number(computed)}, not {claimed.strip()}")
    return expression, claimed, computed, True, ""


def check_annotations(solution: str) -> list[Annotation]:
    """Every ``<<…>>`` annotation in ``solution``, recomputed. The value written right after an
    annotation (GSM8K writes ``<<48/2=24>>24``) must agree with the annotation too."""
    found = []
    for match in ANNOTATION.finditer(solution):
        expression, claimed, computed, ok, reason = check_annotation(match.group(1))
        if ok:
            after = re.match(r"\s*\$?\s*(-?(?:\d[\d,]*)?\.?\d+)", solution[match.end():])
            if after is not None:
                written = parse_number(after.group(1))
                if written is not None and not matches(written, computed):
                    ok, reason = False, (f"text after <<{match.group(1)}>> says {after.group(1)}, "
                                         f"but the annotation computes {format_number(computed)}")
        found.append(Annotation(match.group(0), expression, claimed, computed, ok, reason, match.start(), match.end()))
    return found


_NUM = r"\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
INLINE_EQUATION = re.compile(
    rf"(?<![\w.,/])({_NUM}(?:\s*[-+*/x×÷−]\s*{_NUM})+)\s*=\s*(-?{_NUM})(?![\d])")


def check_inline_equations(solution: str) -> list[Annotation]:
    """Plain-prose computations such as ``20/4 = $5`` (outside ``<<…>>``), recomputed like annotations.

    The annotations themselves are blanked out first, so ``5*7=$<<5*7=35>>35`` is read as ``5*7=$35``.
    """
    prose = ANNOTATION.sub("", solution)
    found = []
    for match in INLINE_EQUATION.finditer(prose):
        inner = f"{match.group(1)}={match.group(2)}"
        expression, claimed, computed, ok, reason = check_annotation(inner)
        reason = reason.replace("annotation <<", "computation <<")
        found.append(Annotation(match.group(0), expression, claimed, computed, ok, reason, match.start(), match.end()))
    return found


@dataclass
class SolutionCheck:
    """The verdict on a GSM8K-style solution: ``ok`` and, when not, every reason."""

    ok: bool
    reasons: list[str]
    final: str | None  # the normalised number after ``####``
    steps: list[Annotation]  # annotations first, then plain-prose computations

    def as_dict(self) -> dict:
        return {"ok": self.ok, "reasons": list(self.reasons), "final": self.final,
                "steps": [s.as_dict() for s in self.steps]}


def verify_solution(solution: str, *, require_annotations: bool = True) -> SolutionCheck:
    """Recompute a GSM8K-style solution and say whether it is consistent.

    Checks, in order: there is a number after ``####``; there is at least one ``<<…>>`` annotation
    (unless ``require_annotations=False``); every annotation and every plain-prose computation
    (``20/4 = $5``) recomputes to the value written; the final answer is the result of one of those
    computations. On GSM8K's own training solutions about 94 % pass (the rest mostly use shorthand such
    as ``2/3 = 40`` for "two thirds of 60 is 40", or compute the last step in words).
    """
    reasons: list[str] = []
    final = None
    if "####" not in solution:
        reasons.append("no final answer: the solution has no '####' line")
    else:
        tail = solution.split("####")[-1].strip().split()
        value = parse_number(tail[0]) if tail else None
        if value is None:
            reasons.append(f"no number after '####' (found {' '.join(tail)[:30]!r})")
        else:
            final = format_number(value)
    annotations = check_annotations(solution)
    inline = check_inline_equations(solution)
    if require_annotations and not annotations:
        reasons.append("no calculator annotation <<expression=result>> to verify")
    reasons += [a.reason for a in annotations + inline if not a.ok]
    if final is not None and (annotations or inline):
        computed = [s.computed for s in annotations + inline if s.ok and s.computed is not None]
        if not any(matches(parse_number(final), c) for c in computed):
            reasons.append(f"final answer {final} is not the result of any computation in the solution")
    return SolutionCheck(not reasons, reasons, final, annotations + inline)
