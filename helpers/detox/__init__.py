"""Detoxification methods evaluated on SafeEdit: DINM (locate the toxic layer, edit its W_V), FT-L, MEND,
Ext-Sub, Self-Reminder, and the trained baselines SFT, DPO and RLHF; the sweep and the main table."""
from __future__ import annotations

from .dinm import DEFAULT_LR, DINM, DINMSession, default_lr
from .ext_sub import ExtSubMethod
from .ft_l import FTLMethod
from .locate import (
    MODULE_NAMES,
    VARIANTS,
    agreement,
    locate_records,
    locate_toxic_layer,
    pair_inputs,
    record_distances,
    reused_first_layer,
    wv_module,
    wv_module_name,
)
from .mend import MENDMethod
from .rlhf import RLHFMethod
from .self_reminder import SelfReminderMethod
from .sweep import rejudge
from .table import TABLE_METHODS, table_frame, table_markdown
from .trained import DPOMethod, SFTMethod, load_train_records, preference_margin, response_nll, training_pairs

__all__ = [
    "DEFAULT_LR", "DINM", "DINMSession", "DPOMethod", "ExtSubMethod", "FTLMethod", "MENDMethod", "MODULE_NAMES",
    "RLHFMethod", "SFTMethod", "SelfReminderMethod", "TABLE_METHODS", "VARIANTS", "agreement", "default_lr",
    "load_train_records", "locate_records", "locate_toxic_layer", "pair_inputs", "preference_margin",
    "record_distances", "rejudge", "response_nll", "reused_first_layer", "table_frame", "table_markdown",
    "training_pairs", "wv_module", "wv_module_name",
]
