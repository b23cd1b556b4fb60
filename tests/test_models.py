"""The embedded model: offline load from the cache, deterministic greedy generation, clear errors."""
from __future__ import annotations

import pytest

from helpers.common.generation import chat_prompt, generate, truncate
from helpers.common.models import (
    EMBEDDED_NAME,
    ModelNotAvailableError,
    embedded_model_dir,
    is_embedded_cached,
    load_model,
    parameter_checksum,
    pick_dtype,
    resolve_model_path,
)


def test_embedded_model_is_cached_as_safetensors(embedded):
    folder = embedded_model_dir()
    assert is_embedded_cached()
    assert (folder / "model.safetensors").exists()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.gguf"))


def test_embedded_model_shape(embedded):
    model, tokenizer = embedded
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert "<|im_start|>assistant" in chat_prompt(tokenizer, "Hi")


def test_greedy_generation_is_deterministic(embedded):
    model, tokenizer = embedded
    prompt = "Name three colours."
    first = generate(model, tokenizer, [prompt], max_new_tokens=16, progress=False)
    second = generate(model, tokenizer, [prompt], max_new_tokens=16, progress=False)
    assert first == second and first[0].strip()


def test_batched_generation_keeps_order(embedded):
    model, tokenizer = embedded
    prompts = ["What is the capital of France? Answer in one word.", "Say hello.",
               "What is the capital of France? Answer in one word."]
    out = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=2, progress=False)
    assert len(out) == 3 and out[0] == out[2]


def test_seeded_sampling_is_reproducible(embedded):
    model, tokenizer = embedded
    kwargs = dict(max_new_tokens=12, do_sample=True, temperature=1.0, progress=False)
    a = generate(model, tokenizer, ["Tell me a word."], seed=3, **kwargs)
    b = generate(model, tokenizer, ["Tell me a word."], seed=3, **kwargs)
    assert a == b


def test_loading_twice_gives_same_weights(embedded):
    model, _ = embedded
    again, _ = load_model(EMBEDDED_NAME, device="cpu")
    assert parameter_checksum(again) == parameter_checksum(model)


def test_unknown_name_is_one_clear_sentence():
    with pytest.raises(ModelNotAvailableError, match="Unknown model name 'gpt-17'.*embedded"):
        resolve_model_path("gpt-17")


def test_hub_id_without_network_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="Could not load 'Qwen/Qwen2.5-0.5B-Instruct'.*embedded model"):
        load_model("Qwen/Qwen2.5-0.5B-Instruct", device="cpu")


def test_dtype_choice():
    import torch

    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cpu", "bfloat16") == torch.bfloat16


def test_dtype_from_the_environment(monkeypatch):
    import torch

    monkeypatch.setenv("HELPERS_DTYPE", "bfloat16")
    assert pick_dtype("cpu") == torch.bfloat16
    assert pick_dtype("cpu", torch.float32) == torch.float32  # an explicit dtype wins
    monkeypatch.setenv("HELPERS_DTYPE", "float32")
    assert pick_dtype("cuda") == torch.float32  # the GPU default (bf16) is overridden
    monkeypatch.setenv("HELPERS_DTYPE", "auto")
    assert pick_dtype("cpu") == torch.float32
    monkeypatch.setenv("HELPERS_DTYPE", "fp32")
    with pytest.raises(ValueError, match="HELPERS_DTYPE='fp32'.*float32"):
        pick_dtype("cpu")


def test_truncate():
    assert truncate("a " * 200, 20).endswith("…") and len(truncate("a " * 200, 20)) == 20
    assert truncate("short") == "short"


@pytest.mark.parametrize("capability, expected", [((7, 5), "float16"), ((7, 0), "float16"), ((8, 0), "bfloat16"),
                                                  ((9, 0), "bfloat16")])
def test_auto_dtype_on_gpus_follows_the_compute_capability(monkeypatch, capability, expected):
    """A T4 (7.5, free Colab) emulates bfloat16 at best: auto gives float16 there, bfloat16 from Ampere (8.0) on."""
    import torch

    monkeypatch.delenv("HELPERS_DTYPE", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what emulation reports
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert pick_dtype("cuda") == getattr(torch, expected)
    assert pick_dtype("cuda:0") == getattr(torch, expected)


def test_cpu_bf16_support_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    from helpers.common import models

    real_open = builtins.open
    for flags, expected in (("fpu sse2 avx512f avx512_bf16 amx_tile amx_bf16", "amx"),
                            ("fpu sse2 avx512f avx512_bf16", "avx512_bf16"), ("fpu sse2 avx2", None)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda path, *a, _i=info, **k: real_open(_i if path == "/proc/cpuinfo"
                                                                                       else path, *a, **k))
        assert models.cpu_bf16_support() == expected, flags
