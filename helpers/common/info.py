"""``python -m helpers info`` and ``python -m helpers prepare-model``."""
from __future__ import annotations

import importlib.metadata as md
import platform
import sys

PACKAGES = ["course-helpers", "torch", "transformers", "accelerate", "gguf", "datasets", "trl", "peft",
            "safetensors", "numpy", "matplotlib", "seaborn", "nbval", "pytest"]


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the information as JSON")


def add_arguments_prepare_model(parser) -> None:
    pass


def collect() -> dict:
    from .config import cache_dir, data_dir, display_path, get_scale, results_dir
    from .models import embedded_model_dir, is_embedded_cached, pick_device

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    try:
        folder = data_dir()
        data = display_path(folder) if folder else "not set (loaders use the Hugging Face hub)"
    except FileNotFoundError as err:
        data = f"invalid: {err}"
    try:
        scale = get_scale()
    except ValueError as err:  # info must work to diagnose exactly this
        scale = f"invalid: {err}"
    device = pick_device()
    extra = ""
    if device == "cuda":
        import torch

        extra = f" ({torch.cuda.get_device_name(0)})"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "device": device + extra,
        "scale": scale,
        "data_dir": data,
        "cache_dir": display_path(cache_dir()),
        "results_dir": display_path(results_dir()),
        "embedded_model": {"cached": is_embedded_cached(), "folder": display_path(embedded_model_dir())},
    }


def main(args) -> int:
    info = collect()
    if getattr(args, "json", False):
        import json

        print(json.dumps(info, indent=2))
        return 0
    print(f"python        {info['python']}  ({info['platform']})")
    for name, version in info["packages"].items():
        print(f"  {name:<16}{version or 'not installed'}")
    print(f"device        {info['device']}")
    print(f"scale         {info['scale']}  (HELPERS_SCALE)")
    print(f"data folder   {info['data_dir']}  (HELPERS_DATA_DIR)")
    print(f"cache folder  {info['cache_dir']}  (HELPERS_CACHE)")
    print(f"results       {info['results_dir']}")
    cached = info["embedded_model"]
    state = "cached" if cached["cached"] else "not cached yet (run `python -m helpers prepare-model`)"
    print(f"embedded model smollm2-135m-instruct: {state} at {cached['folder']}")
    return 0


def main_prepare_model(args) -> int:
    from .models import prepare_embedded_model

    print(prepare_embedded_model())
    return 0
