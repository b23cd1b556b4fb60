"""Attack prompt templates for building a SafeEdit-style benchmark (chapter 01).

``helpers/resources/attack_templates.json`` holds 48 templates written by the course team. Each has a ``name``, one or
more ``families`` (the attack categories seen in SafeEdit, :data:`ATTACK_FAMILIES`) and a ``template`` with
exactly one ``{question}`` slot. The *adversarial prompt* of a record is a template with a question filled in;
its ``attack category`` is the families joined by ``", "`` (as in the official data, e.g.
``"Character Roleplay, Assumed Responsibility"``) and its ``attack name`` is the template's name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..common.config import resource_path

#: The attack families, spelled as in SafeEdit's ``attack category`` field.
ATTACK_FAMILIES: tuple[str, ...] = (
    "Character Roleplay", "Assumed Responsibility", "Text Continuation", "Superior Model", "Emotion",
    "Research Experiment", "Simulate Jailbreaking",
)
SLOT = "{question}"
ATTACKS_FILE = resource_path("attack_templates.json")


class AttackTemplateError(ValueError):
    """A malformed attack template file; the message names the file, the template and the field."""


@dataclass(frozen=True)
class AttackTemplate:
    name: str
    families: tuple[str, ...]
    template: str

    @property
    def category(self) -> str:
        """The value of SafeEdit's ``attack category`` field for this template."""
        return ", ".join(self.families)

    def fill(self, question: str) -> str:
        """The adversarial prompt: the template with ``question`` in its slot (braces in the question are kept)."""
        return self.template.replace(SLOT, question.strip())


def parse_attack_templates(doc, source: str = "<templates>") -> list[AttackTemplate]:
    """Validate a templates document (``{"templates": [...]}`` or a bare list) and return the templates."""
    items = doc.get("templates") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise AttackTemplateError(f"{source}: expected a non-empty list under 'templates'")
    templates, seen = [], set()
    for index, item in enumerate(items):
        where = f"{source}: template #{index}"
        if not isinstance(item, dict):
            raise AttackTemplateError(f"{where} is a {type(item).__name__}, expected an object")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise AttackTemplateError(f"{where}: field 'name' must be a non-empty string")
        where = f"{source}: template #{index} ({name!r})"
        if name in seen:
            raise AttackTemplateError(f"{where}: duplicate name")
        seen.add(name)
        families = item.get("families")
        if not isinstance(families, list) or not families:
            raise AttackTemplateError(f"{where}: field 'families' must be a non-empty list")
        unknown = [f for f in families if f not in ATTACK_FAMILIES]
        if unknown:
            raise AttackTemplateError(f"{where}: field 'families' has unknown {unknown}; use {list(ATTACK_FAMILIES)}")
        text = item.get("template")
        if not isinstance(text, str) or text.count(SLOT) != 1:
            raise AttackTemplateError(f"{where}: field 'template' must be a string with exactly one {SLOT} slot")
        templates.append(AttackTemplate(name, tuple(families), text))
    return templates


def load_attack_templates(path: str | Path | None = None) -> list[AttackTemplate]:
    """The team's 48 templates (or those of another file in the same format)."""
    path = Path(path) if path is not None else ATTACKS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"attack template file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise AttackTemplateError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    return parse_attack_templates(doc, source=str(path))


def family_counts(templates: list[AttackTemplate]) -> dict[str, int]:
    """How many templates belong to each family (a template can belong to several)."""
    return {family: sum(family in t.families for t in templates) for family in ATTACK_FAMILIES}
