"""Chapter results: each notebook records its key numbers; ``run-all`` gathers them into a summary."""
from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

from .config import get_scale, results_dir
from .io import atomic_write_json


def hardware() -> str:
    """A one-line description of the hardware this process runs on."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU: {torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover
        pass
    import os

    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def record_chapter(chapter: str, numbers: dict, *, notes: str = "") -> Path:
    """Write ``results/chapters/<chapter>.json`` with the chapter's key numbers, scale and hardware."""
    payload = {
        "chapter": chapter,
        "scale": get_scale(),
        "hardware": hardware(),
        "date": _dt.date.today().isoformat(),
        "numbers": numbers,
        "notes": notes,
    }
    return atomic_write_json(results_dir() / "chapters" / f"{chapter}.json", payload)


def load_chapters(folder: Path | None = None) -> list[dict]:
    folder = folder or results_dir() / "chapters"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
