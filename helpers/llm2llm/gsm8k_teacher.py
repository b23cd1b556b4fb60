"""Teachers for LLM2LLM on GSM8K (chapter 07): the paper-style prompt and an offline programmatic teacher.

**The prompt** (:func:`teacher_prompt`) is modelled on the LLM2LLM paper's GSM8K prompt: the teacher sees
a one-shot example, then the seed problem the student got wrong (question and annotated solution) and the
student's wrong answer, and is asked for one new problem of the same kind in the format
``Question: … Answer: … #### N`` with calculator annotations ``<<48/2=24>>`` we can recompute. Any
:class:`helpers.common.teacher.Teacher` (the embedded model, a local HF model, an OpenAI-compatible endpoint)
answers it.

**The programmatic teacher** (:class:`ProgrammaticGSM8KTeacher`, registered as ``"programmatic-gsm8k"``)
needs no language model: it reads the seed problem out of the same prompt, turns it into a template and
writes a new problem with *different numbers* and a recomputed solution. How the template is built:

1. Every number of the question that the solution uses inside a calculator annotation becomes a
   variable (occurrences with the same value are one variable). Numbers next to ``/`` or ``:`` (fractions,
   times), the number 1, and numbers whose value a word of the question also means ("twice" = 2,
   "dozen" = 12, "three" = 3, "hour" = 60 …) stay fixed.
2. Each annotation ``<<a*b=c>>`` becomes a step whose literals are bound to variables, to earlier
   results, or stay constants; its result is a new symbol.
3. A value that would mean two different things (a varied number that is also an intermediate result, a
   result equal to a constant …) makes the number fixed, or, when a result is involved, the problem is not
   templatable (the reply says why, and the loop logs the rejection).
4. New values are drawn near the old ones (same decimals, same roundness: multiples of 5, 10, 25 …); all
   steps are recomputed exactly; a draw is kept only if every result keeps its sign and stays an integer
   where it was one (money keeps at most two decimals). The question, the annotations, the numbers in the
   prose and the final answer are rewritten.

The reply is verified like any teacher's reply by the LLM2LLM loop. The varied problem is an
*augmentation* of the seed (same story and reasoning, new numbers), not a new story: weaker than what a
strong LLM teacher writes, but correct by construction and available offline, in CI, in seconds.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from ..common.teacher import Teacher
from .arithmetic import ANNOTATION, UnsafeExpressionError, evaluate, format_number, parse_number, verify_solution

# ----------------------------------------------------------------------------------------------------
# The paper-style teacher prompt
# ----------------------------------------------------------------------------------------------------
SEED_MARK = "### Original problem"
STUDENT_MARK = "### Student's wrong answer"
NEW_MARK = "### New problem"

TEACHER_SYSTEM = ("You are an experienced grade-school mathematics teacher. You write clear word problems "
                  "with fully worked, correct step-by-step solutions.")

ONE_SHOT = {
    "question": ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
                 "in May. How many clips did Natalia sell altogether in April and May?"),
    "answer": ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"),
    "student": "Natalia sold 48 clips in April and 48*2 = 96 clips in May, so 48+96 = 144.\n#### 144",
    "new_question": ("A bakery baked 36 muffins on Monday and a third as many muffins on Tuesday. "
                     "How many muffins did the bakery bake on the two days together?"),
    "new_answer": ("On Tuesday the bakery baked 36/3 = <<36/3=12>>12 muffins.\n"
                   "Together it baked 36+12 = <<36+12=48>>48 muffins.\n#### 48"),
}

TEACHER_INSTRUCTIONS = """A student got the math word problem below wrong. Write ONE new word problem that \
practises the same skills (the same kind of reasoning and a similar number of steps) with a new story and \
new numbers, and solve it step by step. Keep the numbers friendly: whole numbers or money with cents.

Rules:
- Write every calculation as a calculator annotation followed by its result, e.g. 48/2 = <<48/2=24>>24.
- The last line of the solution is '#### N', where N is the final answer as a number.
- Reply in exactly this format and nothing else:
Question: <the new problem>
Answer: <the step-by-step solution>
#### <N>"""


def _block(question: str, answer: str, student: str) -> str:
    return (f"{SEED_MARK}\nQuestion: {question.strip()}\nAnswer: {answer.strip()}\n"
            f"{STUDENT_MARK}\n{student.strip() or '(no answer)'}\n{NEW_MARK}\n")


def teacher_prompt(question: str, answer: str, student_output: str | None = None, *,
                   max_student_chars: int = 600) -> str:
    """The teacher prompt for one wrongly answered seed problem (see the module docstring)."""
    student = (student_output or "").strip()
    if len(student) > max_student_chars:
        student = student[:max_student_chars].rstrip() + " …"
    example = (_block(ONE_SHOT["question"], ONE_SHOT["answer"], ONE_SHOT["student"])
               + f"Question: {ONE_SHOT['new_question']}\nAnswer: {ONE_SHOT['new_answer']}\n")
    return (f"{TEACHER_INSTRUCTIONS}\n\nExample\n{example}\nNow your turn.\n"
            f"{_block(question, answer, student)}")


def seed_from_prompt(prompt: str) -> tuple[str, str]:
    """``(question, answer)`` of the seed problem inside a :func:`teacher_prompt` text."""
    if SEED_MARK not in prompt:
        raise ValueError(f"not a GSM8K teacher prompt: no {SEED_MARK!r} section")
    section = prompt.rsplit(SEED_MARK, 1)[1].split(STUDENT_MARK, 1)[0]
    match = re.search(r"Question:\s*(.*?)\s*\nAnswer:\s*(.*)", section, flags=re.DOTALL)
    if match is None:
        raise ValueError("the seed section of the teacher prompt has no 'Question:'/'Answer:' lines")
    return match.group(1).strip(), match.group(2).strip()


# ----------------------------------------------------------------------------------------------------
# Templates: a seed problem with variables instead of numbers
# ----------------------------------------------------------------------------------------------------
class NotTemplatable(ValueError):
    """A seed problem whose numbers cannot be varied safely (the message says why)."""


#: Words whose numeric meaning a solution may use as a constant; question numbers with these values stay fixed.
WORD_VALUES: dict[str, tuple[int, ...]] = {
    "half": (2,), "halves": (2,), "twice": (2,), "double": (2,), "doubled": (2,), "pair": (2,), "pairs": (2,),
    "both": (2,), "triple": (3,), "tripled": (3,), "thrice": (3,), "third": (3,), "thirds": (3,),
    "quarter": (4,), "quarters": (4,), "fourth": (4,), "fifth": (5,), "dozen": (12,), "dozens": (12,),
    "week": (7,), "weeks": (7, 52), "weekly": (7, 52), "day": (24,), "days": (7, 24, 30, 365),
    "hour": (60,), "hours": (60, 24), "minute": (60,), "minutes": (60,), "month": (12, 30), "months": (12,),
    "year": (12, 52, 365), "years": (12, 52, 365), "percent": (100,), "%": (100,), "cents": (100,),
    "cent": (100,), "dollar": (100,), "century": (100,), "decade": (10,), "score": (20,),
    "one": (1,), "two": (2,), "three": (3,), "four": (4,), "five": (5,), "six": (6,), "seven": (7,),
    "eight": (8,), "nine": (9,), "ten": (10,), "eleven": (11,), "twelve": (12,), "fifteen": (15,),
    "twenty": (20,), "thirty": (30,), "fifty": (50,), "hundred": (100,), "thousand": (1000,),
}
_QUESTION_NUMBER = re.compile(r"(?<![\w.,/:])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w/:]|[.,]\d)")
# in solutions, units may be glued to numbers ("80cm"), and ".4" is a number
_PROSE_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+|(?=\.\d))(\.\d+)?(?!\d|[.,]\d|(?:st|nd|rd|th)\b)")
_EXPR_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")


@dataclass
class Step:
    """One annotation: literal positions in its expression and what each literal is bound to."""

    expression: str
    literals: list[tuple[int, int, str]]  # (start, end, binding) with binding "q:<value>", "r:<index>" or "c"
    result: Fraction
    decimals: int  # decimals written in the original result


@dataclass
class Template:
    question: str
    answer: str
    variables: dict[Fraction, int]  # varied question value → decimals written
    steps: list[Step]
    final: str  # "q:<value>" or "r:<index>"
    fixed: dict[Fraction, str] = field(default_factory=dict)  # value → why it stays fixed


def _value(whole: str, frac: str | None) -> Fraction:
    return parse_number(whole + (frac or ""))


def _decimals(frac: str | None) -> int:
    return len(frac) - 1 if frac else 0


def build_template(question: str, answer: str) -> Template:
    """A :class:`Template` of a seed problem, or :class:`NotTemplatable` explaining why not."""
    check = verify_solution(answer)
    if not check.ok:
        raise NotTemplatable("the seed's own solution does not verify: " + "; ".join(check.reasons))
    annotations = [m for m in ANNOTATION.finditer(answer)]
    if any("," in m.group(1) for m in annotations):
        raise NotTemplatable("an annotation uses thousands separators")
    words = set(re.findall(r"[a-z]+|%", (question + " " + ANNOTATION.sub(" ", answer)).lower()))
    reserved = {Fraction(v): w for w in words if w in WORD_VALUES for v in WORD_VALUES[w]}

    question_values: dict[Fraction, int] = {}
    fixed: dict[Fraction, str] = {}
    for m in _QUESTION_NUMBER.finditer(question):
        value = _value(m.group(1), m.group(2))
        question_values[value] = max(question_values.get(value, 0), _decimals(m.group(2)))
    for m in re.finditer(r"\d[\d,.]*", question):  # numbers inside fractions, times, ordinals … stay fixed
        if not _QUESTION_NUMBER.fullmatch(m.group(0).rstrip(".,")) or _is_embedded(question, m):
            value = parse_number(m.group(0).rstrip(".,"))
            if value is not None:
                fixed.setdefault(value, "part of a fraction, time or ordinal in the question")
    for value in list(question_values):
        if value in reserved:
            fixed.setdefault(value, f"the word {reserved[value]!r} also means {format_number(value)}")
        elif value <= 1:
            fixed.setdefault(value, "0 and 1 usually mean 'none' or 'one item'")

    # Bind literals; a varied number that collides with a result becomes fixed and we bind again.
    for _ in range(len(question_values) + 1):
        varied = {v: d for v, d in question_values.items() if v not in fixed}
        steps, result_values, varying_results = [], [], []
        conflict = None
        constants: set[Fraction] = set()
        for m in annotations:
            expression, claimed = m.group(1).rsplit("=", 1)
            literals, depends = [], False
            for lit in _EXPR_NUMBER.finditer(expression):
                value = parse_number(lit.group(0))
                earlier = [i for i, r in enumerate(result_values) if r == value]
                moving = [i for i in earlier if varying_results[i]]
                if value in varied and moving:
                    conflict = ("q", value)
                    break
                if len(earlier) > 1 and moving:
                    raise NotTemplatable(f"two intermediate results equal {format_number(value)}")
                if earlier:
                    binding = f"r:{earlier[-1]}"
                    depends |= varying_results[earlier[-1]]
                elif value in varied:
                    binding, depends = f"q:{value}", True
                else:
                    binding = "c"
                    constants.add(value)
                literals.append((lit.start(), lit.end(), binding))
            if conflict:
                break
            result = evaluate(expression)
            steps.append(Step(expression, literals, result, len(claimed.strip().split(".")[1])
                              if "." in claimed.strip() else 0))
            result_values.append(result)
            varying_results.append(depends)
        if conflict:
            fixed[conflict[1]] = "also an intermediate result"
            continue
        # any other collision of a varied value with a constant, a fixed number or a result
        clash = [v for v in varied if v in constants or v in result_values]
        if clash:
            for v in clash:
                fixed[v] = "the solution also uses this value as a constant or a result"
            continue
        break
    else:  # pragma: no cover - the loop always settles
        raise NotTemplatable("could not separate the numbers")
    used = {b[2:] for s in steps for _, _, b in s.literals if b.startswith("q:")}
    varied = {v: d for v, d in varied.items() if str(v) in used}
    if not varied:
        raise NotTemplatable("no number of the question can be varied safely")
    for i, (value, moving) in enumerate(zip(result_values, varying_results)):
        if not moving:
            continue
        others = [j for j, r in enumerate(result_values) if r == value and j != i]
        if value in constants or value in fixed or value in reserved or others or value in question_values:
            raise NotTemplatable(f"the intermediate result {format_number(value)} also appears with another meaning")
    final_value = parse_number(check.final)
    moving_results = [i for i, (r, m) in enumerate(zip(result_values, varying_results)) if m and r == final_value]
    if moving_results:
        final = f"r:{moving_results[-1]}"
    elif final_value in varied:
        final = f"q:{final_value}"
    else:
        raise NotTemplatable("the final answer does not depend on the numbers that can be varied")
    return Template(question, answer, varied, steps, final, fixed)


def _is_embedded(text: str, match: re.Match) -> bool:
    before = text[match.start() - 1] if match.start() > 0 else " "
    after = text[match.end()] if match.end() < len(text) else " "
    return before in "/:" or after in "/:" or after.isalpha()


def _draw(value: Fraction, decimals: int, rng: random.Random) -> Fraction:
    scale = 10 ** decimals
    n = int(value * scale)
    step = 1
    for s in (1000, 100, 50, 25, 10, 5):
        if n % s == 0 and n >= 2 * s:
            step = s
            break
    if step == 1 and n <= 12:
        low, high = 2, max(12, n + 3)
    else:
        low, high = max(step, n // 2), max(math.ceil(n * 1.6), n + 3 * step)
    choices = [k for k in range(low - low % step or step, high + 1, step) if k != n and k >= step]
    return Fraction(rng.choice(choices), scale)


def _fits(new: Fraction, old: Fraction, decimals: int) -> bool:
    if (old > 0) != (new > 0) or (old < 0) != (new < 0) or (old == 0) != (new == 0):
        return False
    if old.denominator == 1:
        return new.denominator == 1
    allowed = max(2, decimals)
    return (new * 10 ** allowed).denominator == 1 and abs(new) < 10 ** 7


def _render_number(value: Fraction, decimals: int = 0, commas: bool = False) -> str:
    """``value`` written like the number it replaces: the same decimals (``$1.50`` → ``$2.25``, and
    ``$2.00`` rather than ``$2``) where exact, thousands separators if the original had them."""
    if decimals and (value * 10 ** decimals).denominator == 1:
        text = str((Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal(1).scaleb(-decimals)))
    else:
        text = format_number(value)
    if commas and "." not in text and abs(value) >= 1000:
        text = f"{int(value):,}"
    return text


def vary(template: Template, rng: random.Random, *, tries: int = 60) -> dict | None:
    """A new ``{"question", "answer"}`` from ``template`` with fresh numbers, or ``None`` if no draw fits."""
    for _ in range(tries):
        new_vars = {v: _draw(v, d, rng) for v, d in template.variables.items()}
        if len(set(new_vars.values())) < len(new_vars) or len(new_vars) == 0:
            continue
        results: list[Fraction] = []
        new_expressions = []
        ok = True
        for step in template.steps:
            pieces, last = [], 0
            for start, end, binding in step.literals:
                pieces.append(step.expression[last:start])
                if binding.startswith("q:"):
                    pieces.append(format_number(new_vars[Fraction(binding[2:])]))
                elif binding.startswith("r:"):
                    pieces.append(format_number(results[int(binding[2:])]))
                else:
                    pieces.append(step.expression[start:end])
                last = end
            pieces.append(step.expression[last:])
            expression = "".join(pieces)
            try:
                value = evaluate(expression)
            except (UnsafeExpressionError, ZeroDivisionError):
                ok = False
                break
            if not _fits(value, step.result, step.decimals):
                ok = False
                break
            results.append(value)
            new_expressions.append(expression)
        if not ok:
            continue
        mapping: dict[Fraction, Fraction] = dict(new_vars)
        for step, value in zip(template.steps, results):
            if step.result != value:
                mapping.setdefault(step.result, value)
        return {"question": _substitute(template.question, mapping, _QUESTION_NUMBER),
                "answer": _rewrite_answer(template, new_expressions, results, mapping),
                "values": {format_number(k): format_number(v) for k, v in new_vars.items()}}
    return None


def _substitute(text: str, mapping: dict[Fraction, Fraction], pattern: re.Pattern) -> str:
    def replace(m: re.Match) -> str:
        value = _value(m.group(1), m.group(2))
        if value not in mapping:
            return m.group(0)
        return _render_number(mapping[value], _decimals(m.group(2)), "," in m.group(1))

    return pattern.sub(replace, text)


def _rewrite_answer(template: Template, expressions: list[str], results: list[Fraction],
                    mapping: dict[Fraction, Fraction]) -> str:
    out, last = [], 0
    for match, expression, value in zip(ANNOTATION.finditer(template.answer), expressions, results):
        out.append(_substitute(template.answer[last:match.start()], mapping, _PROSE_NUMBER))
        out.append(f"<<{expression}={format_number(value)}>>")
        last = match.end()
    out.append(_substitute(template.answer[last:], mapping, _PROSE_NUMBER))
    return "".join(out)


# ----------------------------------------------------------------------------------------------------
# The teacher
# ----------------------------------------------------------------------------------------------------
class ProgrammaticGSM8KTeacher(Teacher):
    """An offline teacher: answers :func:`teacher_prompt` prompts with a number-varied copy of the seed.

    Deterministic: the same prompt, ``seed`` and position among identical prompts give the same reply;
    identical prompts in one call get different variants. When the seed cannot be varied the reply says
    why (and contains no ``Question:`` block, so the loop records it as rejected with that reason).
    """

    name = "programmatic-gsm8k"
    prompt_style = "instruction"

    def __init__(self, log_path=None, **_ignored):
        super().__init__(log_path)

    def _complete(self, prompts, *, max_new_tokens=256, temperature=0.0, seed=0, system=None):
        seen: dict[str, int] = defaultdict(int)
        replies = []
        for prompt in prompts:
            text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
            occurrence = seen[text]
            seen[text] += 1
            replies.append(self.reply(text, seed=seed, occurrence=occurrence))
        return replies

    def reply(self, prompt: str, *, seed: int | None = 0, occurrence: int = 0) -> str:
        try:
            question, answer = seed_from_prompt(prompt)
            template = build_template(question, answer)
        except (ValueError, UnsafeExpressionError) as err:
            return f"(programmatic teacher: cannot vary this problem: {err})"
        digest = hashlib.sha256(f"{seed}|{occurrence}|{question}".encode()).hexdigest()
        variant = vary(template, random.Random(int(digest[:16], 16)))
        if variant is None:
            return "(programmatic teacher: no draw of new numbers kept every intermediate result valid)"
        return f"Question: {variant['question']}\nAnswer: {variant['answer']}"
