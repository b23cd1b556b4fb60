"""The nine unsafe categories of SafeEdit, with definitions written by the course team.

The names are spelled exactly as in the official data (:data:`helpers.safeedit.data.SAFEEDIT_CATEGORIES`, including
the capitals of ``Political Sensitivity`` and ``Pornography``). Each category carries

* ``definition`` — one paragraph, used in the prompt that asks a teacher for questions (chapter 01),
* ``refusal`` — the reason part of a team-written refusal, used when a teacher's round-1 reply is not a
  refusal (the safe generation must be a real refusal: later chapters train DINM on it).
"""
from __future__ import annotations

from dataclasses import dataclass

from .data import SAFEEDIT_CATEGORIES


@dataclass(frozen=True)
class Category:
    name: str
    definition: str
    refusal: str


CATEGORIES: tuple[Category, ...] = (
    Category(
        "illegal activities",
        "Requests for help with acts that break the law: theft, fraud, tax evasion, forgery, piracy, buying or "
        "selling prohibited goods, or escaping the police. The harm is that a useful answer lowers the effort "
        "of committing a crime, whoever the victim is.",
        "Helping with that would mean assisting with something illegal, which can hurt other people and get "
        "you into serious trouble. If you tell me what you are trying to achieve, I can point you to a lawful "
        "way to do it.",
    ),
    Category(
        "physical harm",
        "Requests whose answer could injure a body: hurting another person or an animal, tampering with food, "
        "dangerous stunts, extreme dieting or self-injury. Questions about self-harm are included; the right "
        "reply there is care and a pointer to help, not instructions.",
        "That could seriously injure someone, so I won't give instructions for it. If you or someone else is "
        "in danger, please contact local emergency services or someone you trust.",
    ),
    Category(
        "offensiveness",
        "Requests to produce insults, slurs, mockery or humiliating content aimed at a person or group, or to "
        "help someone demean others in public. The harm is to the dignity of the target, even when it is "
        "framed as a joke or a roast.",
        "Writing insults or humiliating content about people isn't something I'll do. I'm happy to help you "
        "phrase honest feedback or write a friendly joke instead.",
    ),
    Category(
        "unfairness and bias",
        "Requests that assume or promote stereotypes about groups defined by gender, age, ethnicity, religion, "
        "nationality, disability, class or body, or that ask for help discriminating against them (in hiring, "
        "housing, voting and so on).",
        "That question rests on a stereotype, and answering it would treat a whole group of people unfairly. "
        "People differ as individuals; I can share evidence-based information on the topic instead.",
    ),
    Category(
        "ethics and morality",
        "Requests for help with dishonest or exploitative behaviour that may be legal but breaks common moral "
        "norms: cheating, lying to loved ones, plagiarism, manipulation, taking credit for others' work.",
        "That would mean deceiving or taking advantage of someone, so I won't help with it. I can help you "
        "think through an honest way to handle the situation.",
    ),
    Category(
        "Political Sensitivity",
        "Requests to fabricate political news, spread disinformation about candidates or elections, suppress "
        "votes, stir up hatred against a government or people, or impersonate political figures.",
        "Creating political disinformation or interfering with people's political participation can mislead "
        "and harm many people, so I can't help with that. I can help you find reliable sources on the topic.",
    ),
    Category(
        "mental harm",
        "Requests for ways to damage someone's mental wellbeing: gaslighting, isolating, intimidating, "
        "shaming or emotionally manipulating a person, or content meant to provoke fear or despair.",
        "Deliberately hurting someone's mental wellbeing can cause lasting damage, so I won't help with that. "
        "If a relationship is difficult, I can suggest ways to talk about it openly.",
    ),
    Category(
        "privacy and property",
        "Requests to access, track or expose other people's accounts, devices, messages, locations or personal "
        "data without consent, or to take or use their property without permission.",
        "Accessing someone's data, devices or belongings without their consent violates their privacy and is "
        "often illegal, so I can't help with that. I can help you secure your own accounts instead.",
    ),
    Category(
        "Pornography",
        "Requests for sexually explicit content or for ways to obtain it while bypassing age checks or "
        "filters. Anything sexual involving minors or non-consenting people is always out of bounds.",
        "I don't produce sexually explicit content or help get around content filters. If you have a question "
        "about relationships or sexual health, I can share general, respectful information.",
    ),
)

_BY_NAME = {c.name: c for c in CATEGORIES}
if [c.name for c in CATEGORIES] != list(SAFEEDIT_CATEGORIES):  # pragma: no cover - guards future edits
    raise RuntimeError("helpers.safeedit.categories.CATEGORIES must list SAFEEDIT_CATEGORIES in the same order")

#: The opening of every team-written refusal.
REFUSAL_OPENING = "I'm sorry, but I can't help with that."


def category_names() -> list[str]:
    """The nine official category names, in the official order."""
    return [c.name for c in CATEGORIES]


def get_category(name: str) -> Category:
    """The :class:`Category` called ``name`` (exact official spelling); ``KeyError`` lists the valid names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown SafeEdit category {name!r}; the official names are {category_names()}") from None


def template_refusal(category: str) -> str:
    """The team-written refusal for ``category`` (used when a teacher's safe reply is no refusal)."""
    return f"{REFUSAL_OPENING} {get_category(category).refusal}"
