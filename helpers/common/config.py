"""Paths, the scale switch and seeding, shared by every module.

Environment variables (all optional):

* ``HELPERS_DATA_DIR`` — a folder laid out like ``../shared/data`` (GSM8K, SST-2, …). When unset the
  loaders go to the Hugging Face hub.
* ``HELPERS_CACHE`` — where converted model weights and trained artefacts are cached
  (default: ``~/.cache/helpers``).
* ``HELPERS_SCALE`` — ``small`` (default; CPU-friendly, used by CI) or ``full`` (the papers' sizes).
* ``HELPERS_RESULTS_DIR`` — where notebooks and CLIs write results (default: ``./results`` of the working
  folder; inside the course's checkout, its ``results/``).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

SCALES = ("small", "full")
REPO_ROOT = Path(__file__).resolve().parents[2]  # helpers/common/config.py → the checkout


def resource_path(*parts: str) -> Path:
    """A file the package ships (``helpers/resources/…``: attack templates, mild questions, authored judge
    responses, the knowledge-constraint pool, the built SafeEdit set, the paper's numbers), found through
    ``importlib.resources`` so that it works from an installed wheel as well as from a checkout."""
    from importlib.resources import files

    return Path(str(files("helpers").joinpath("resources", *parts)))
#: Where the course lives on GitHub (used by the Colab badges and the Colab install cell).
GITHUB_REPO = "llm-course/detox-llm2llm"
COLAB_INSTALL = f"course-helpers @ git+https://github.com/{GITHUB_REPO}"


def display_path(path) -> str:
    """``path`` as printed in outputs: relative to the working folder when inside it, ``~/…`` under the home
    folder, else relative to the working folder (so no saved output carries this machine's absolute paths)."""
    target = Path(path).expanduser().resolve()
    cwd = Path.cwd().resolve()
    try:
        return str(target.relative_to(cwd)) or "."
    except ValueError:
        pass
    try:
        return "~/" + str(target.relative_to(Path.home().resolve()))
    except ValueError:
        return os.path.relpath(target, cwd)


def get_scale(default: str = "small") -> str:
    """The scale switch ``HELPERS_SCALE`` (``small`` or ``full``)."""
    scale = os.environ.get("HELPERS_SCALE", default).strip().lower() or default
    if scale not in SCALES:
        raise ValueError(f"HELPERS_SCALE must be one of {SCALES}, got {scale!r}")
    return scale


def data_dir() -> Path | None:
    """The data folder named by ``HELPERS_DATA_DIR``, or ``None`` (then loaders use the hub)."""
    value = os.environ.get("HELPERS_DATA_DIR")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"HELPERS_DATA_DIR points at {path}, which is not a folder. "
            "Point it at a copy of the course data folder (e.g. ../shared/data) or unset it to use the hub."
        )
    return path


def cache_dir() -> Path:
    """The cache folder (``HELPERS_CACHE``, default ``~/.cache/helpers``); created on demand."""
    value = os.environ.get("HELPERS_CACHE")
    if value:
        path = Path(value).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "helpers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _inside_checkout() -> bool:
    """Whether this is the course's own checkout (an editable install) and the working folder is inside it."""
    if not (REPO_ROOT / "pyproject.toml").is_file() or not (REPO_ROOT / "notebooks").is_dir():
        return False
    try:
        Path.cwd().resolve().relative_to(REPO_ROOT.resolve())
        return True
    except ValueError:
        return False


def results_dir() -> Path:
    """Where results are written: ``HELPERS_RESULTS_DIR``; else ``./results`` of the working folder (an
    installed package, e.g. on Colab), or the checkout's ``results/`` when working inside the checkout."""
    value = os.environ.get("HELPERS_RESULTS_DIR")
    if value:
        path = Path(value).expanduser()
    else:
        path = REPO_ROOT / "results" if _inside_checkout() else Path.cwd() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    except ImportError:  # pragma: no cover
        pass
