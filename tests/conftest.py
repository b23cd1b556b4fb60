"""Shared fixtures. Tests read data from HELPERS_DATA_DIR (CI: ../shared/data) and never need the hub."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("HELPERS_DATA_DIR"):
    candidate = REPO.parent / "shared" / "data"
    if candidate.is_dir():
        os.environ["HELPERS_DATA_DIR"] = str(candidate)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HELPERS_SCALE", "small")


@pytest.fixture(scope="session")
def embedded():
    """The embedded model and tokenizer, loaded once per test session (CPU, float32)."""
    import torch

    from helpers.common.models import load_model

    torch.manual_seed(0)
    model, tokenizer = load_model(device="cpu")
    return model, tokenizer


@pytest.fixture(scope="session")
def shared_data() -> Path:
    value = os.environ.get("HELPERS_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("HELPERS_DATA_DIR is not set to the course data folder")
    return Path(value)
