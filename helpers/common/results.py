"""Chapter results: each notebook records its key numbers; ``run-all`` gathers them into a summary."""
from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

from .config import get_scale, results_dir
from .io import atomic_write_json


def hardware() -> str:
    """A one-line description of the hardware this process runs on and how it computes on it, e.g.
    ``"CPU: x86_64, 2 cores; bf16 autocast on amx"`` (see :func:`helpers.common.models.precision`)."""
    import os

    from .models import precision

    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU: {torch.cuda.get_device_name(0)}; {precision()}"
    except ImportError:  # pragma: no cover
        return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {precision('cpu')}"


def record_chapter(chapter: str, numbers: dict, *, notes: str = "") -> None:
    """Write ``results/chapters/<chapter>.json`` with the chapter's key numbers, scale and hardware, and say
    where (relative to the working folder)."""
    payload = {
        "chapter": chapter,
        "scale": get_scale(),
        "hardware": hardware(),
        "date": _dt.date.today().isoformat(),
        "numbers": numbers,
        "notes": notes,
    }
    from .config import display_path

    path = atomic_write_json(results_dir() / "chapters" / f"{chapter}.json", payload)
    print(f"recorded {display_path(path)}")


def load_chapters(folder: Path | None = None) -> list[dict]:
    folder = folder or results_dir() / "chapters"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


#: Precomputed results that chapters read (tables and sweeps too slow for small mode) ship inside the package,
#: with the command and hardware that made them, so a notebook runs from the installed wheel alone.
PRECOMPUTED = "precomputed"


def precomputed_path(name: str) -> Path:
    """Where the package keeps the precomputed result ``name`` (``helpers/resources/precomputed/NAME``)."""
    from .config import resource_path

    return resource_path(PRECOMPUTED, name)


def load_precomputed(name: str) -> dict:
    """A precomputed result shipped with the package; a clear error naming the file when it is missing."""
    path = precomputed_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"precomputed result {name!r} is not in this version of the package "
                                f"(helpers/resources/{PRECOMPUTED}/{name}); recompute it with the command the "
                                "chapter gives")
    return json.loads(path.read_text(encoding="utf-8"))
