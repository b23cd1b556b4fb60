"""The detoxification methods by name (``--method``): vanilla, DINM, SFT, DPO, RLHF, MEND, Ext-Sub, FT-L,
Self-Reminder. Each is a :class:`helpers.safeedit.harness.Method`, built with keyword options."""
from __future__ import annotations

import importlib

from ..safeedit.harness import Method

#: ``--method`` name → "module:class" (constructed with keyword options).
METHODS: dict[str, str] = {
    "vanilla": "helpers.safeedit.harness:VanillaMethod",
    "dinm": "helpers.detox.dinm:DINM",
    "sft": "helpers.detox.trained:SFTMethod",
    "dpo": "helpers.detox.trained:DPOMethod",
    "rlhf": "helpers.detox.rlhf:RLHFMethod",
    "mend": "helpers.detox.mend:MENDMethod",
    "ext-sub": "helpers.detox.ext_sub:ExtSubMethod",
    "ft-l": "helpers.detox.ft_l:FTLMethod",
    "self-reminder": "helpers.detox.self_reminder:SelfReminderMethod",
}


class MethodUnavailable(ValueError):
    """An unknown method name, or a method whose module this version does not ship."""


def get_method(name: str, **options) -> Method:
    """A method by name (see :data:`METHODS`); bad options raise ``TypeError`` (unknown) or ``ValueError``."""
    if name not in METHODS:
        raise MethodUnavailable(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    module_name, attr = METHODS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise MethodUnavailable(f"method {name!r} is not available in this version ({module_name} is missing)") from err
    return getattr(module, attr)(**options)


def _method_class(name: str):
    """The class registered for ``name`` (``None`` when its module is missing)."""
    module_name, attr = METHODS[name].split(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ModuleNotFoundError:
        return None
