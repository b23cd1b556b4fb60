"""Supervised fine-tuning of a *student* model on ``{"prompt", "response"}`` pairs.

Shared by the LLM2LLM loop (chapters 07–08) and the SFT baseline of chapter 05. One function does it:

>>> model = finetune("smollm2-135m-instruct", [{"prompt": "2+2?", "response": "4"}], epochs=2)

What it guarantees

* **One prompt format for training and evaluation.** The training text of an example is exactly what
  :func:`helpers.common.generation.chat_prompt` builds for ``prompt`` (chat template with the generation prompt,
  optional ``system`` turn) followed by ``response`` and the template's end-of-turn marker. So a model
  trained here and queried with :func:`helpers.common.generation.generate` sees the same text in both cases
  (the official LLM2LLM code uses different formats for the two; we do not).
* **Response-only loss.** Prompt tokens (and padding) carry the label ``-100``; only the response and the
  end-of-turn token are learned, so the model also learns to stop.
* **Seeded.** The same ``seed``, data and settings give the same weights (shuffling uses its own
  ``torch.Generator``; LoRA initialisation is seeded too).
* **CPU and CUDA.** On CPU the weights are float32; where the CPU has native bf16 (AMX / AVX512-BF16) the
  forward and backward products run under bf16 autocast (``HELPERS_DTYPE=float32`` turns that off; the
  loss per step then moves by ~1e-4 relative, see ``benchmarks/bench_dtype.py``). On CUDA the weights stay float32 for full
  fine-tuning and the forward pass runs under bfloat16 autocast (mixed precision); with ``lora=True`` the
  frozen base may be bfloat16 and only the adapters train. LoRA adapters are merged back by default, so the
  caller always gets a plain ``transformers`` model.
* **Not in place by default.** Passing an already loaded model trains a *copy* (``inplace=False``), so a
  shared base model (e.g. the test fixture, or the base the LLM2LLM loop retrains from each iteration)
  stays untouched. Pass ``inplace=True`` for continued training or to save memory.

A plain PyTorch loop (AdamW, linear warm-up and decay, gradient clipping, gradient accumulation) keeps it
small and fast; the loss per step and the wall time are kept in ``model.finetune_history``.
"""
from __future__ import annotations

import copy
import math
import random
import time
from typing import Sequence

from tqdm.auto import tqdm

from .config import set_seed
from .generation import chat_prompt, to_messages
from .models import compute_autocast, precision

IGNORE_INDEX = -100


def _end_of_turn(tokenizer, system: str | None = None) -> str:
    """The text the chat template puts after an assistant reply (e.g. ``<|im_end|>\\n``)."""
    probe = "\u2063RESPONSE\u2063"
    if getattr(tokenizer, "chat_template", None):
        messages = to_messages("x", system)
        try:
            with_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": probe}],
                                                 tokenize=False)
        except Exception:  # templates that refuse an assistant turn
            full, with_prompt = "", None
        if with_prompt is not None and full.startswith(with_prompt) and probe in full:
            suffix = full.split(probe, 1)[1]
            if suffix.strip():
                return suffix
    return tokenizer.eos_token or ""


def encode_example(tokenizer, prompt, response: str, *, system: str | None = None,
                   max_length: int = 512) -> dict:
    """Token ids and labels of one example: ``chat_prompt(prompt) + response + end-of-turn``.

    Labels are ``-100`` on the prompt part. When the example is longer than ``max_length`` the *prompt* is
    cut from the left (the response is what we train on); a response longer than ``max_length`` alone is
    cut at the end.
    """
    prompt_text = chat_prompt(tokenizer, prompt, system)
    eot = _end_of_turn(tokenizer, system)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response.strip() + eot.rstrip(), add_special_tokens=False)["input_ids"]
    if len(response_ids) >= max_length:
        response_ids = response_ids[: max_length - 1]
        prompt_ids = prompt_ids[-1:]
    elif len(prompt_ids) + len(response_ids) > max_length:
        prompt_ids = prompt_ids[-(max_length - len(response_ids)):]
    input_ids = list(prompt_ids) + list(response_ids)
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(response_ids)
    return {"input_ids": input_ids, "labels": labels}


def _collate(batch: list[dict], pad_id: int) -> dict:
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, b in enumerate(batch):  # right padding for training
        n = len(b["input_ids"])
        ids[row, :n] = torch.tensor(b["input_ids"])
        labels[row, :n] = torch.tensor(b["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def decoder_layers(model):
    """The ``ModuleList`` of transformer blocks of a causal LM (``model.model.layers`` for Llama-style
    models; found generically as the longest ``ModuleList`` otherwise)."""
    import torch

    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best = None
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            if count is not None and len(module) == count:
                return module
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise ValueError(f"{type(model).__name__}: found no list of transformer blocks")
    return best


def _freeze_lower_layers(model, train_layers: int) -> None:
    """Leave trainable only the last ``train_layers`` blocks and any norm right after them."""
    layers = decoder_layers(model)
    if not 1 <= train_layers <= len(layers):
        raise ValueError(f"train_layers must be between 1 and {len(layers)}, got {train_layers}")
    keep = {id(p) for block in list(layers)[-train_layers:] for p in block.parameters()}
    for name, module in model.named_modules():
        if name.endswith(("model.norm", "final_layernorm", "ln_f")):
            keep.update(id(p) for p in module.parameters())
    trainable_before = {id(p) for p in model.parameters() if p.requires_grad}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep and id(p) in trainable_before)


def _accepts_logits_to_keep(model) -> bool:
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _response_loss(model, batch: dict, keep_logits: bool, reduction: str = "mean"):
    """Cross-entropy over response tokens: their mean (``reduction="mean"``) or their sum (``"sum"``, the
    Trainer engine divides by the response tokens of the whole accumulated, all-rank batch). When the model
    supports ``logits_to_keep``, the output head runs only from the first response position on (the
    vocabulary projection is a large share of the cost for small models, and the prompt positions carry no
    loss anyway)."""
    import torch

    labels = batch["labels"]
    if not keep_logits:
        if reduction == "mean":
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        keep, logits = labels.shape[1], model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    else:
        width = labels.shape[1]
        has_label = (labels != IGNORE_INDEX).any(dim=0).nonzero()
        first = int(has_label[0]) if len(has_label) else width - 1
        keep = width - first + 1 if first > 0 else width
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       logits_to_keep=keep).logits
    targets = labels[:, labels.shape[1] - keep + 1:]
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction=reduction)


def _validate(examples: Sequence[dict]) -> list[dict]:
    checked = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise TypeError(f"finetune: example {i} is a {type(ex).__name__}, expected a dict with 'prompt' and 'response'")
        for field in ("prompt", "response"):
            if field not in ex:
                raise ValueError(f"finetune: example {i} has no {field!r} field (keys: {sorted(ex)})")
        if not isinstance(ex["response"], str) or not ex["response"].strip():
            raise ValueError(f"finetune: example {i} has an empty or non-string 'response'")
        checked.append(ex)
    if not checked:
        raise ValueError("finetune: no training examples")
    return checked


#: ``finetune(engine=…)``: the plain PyTorch loop, the Hugging Face ``Trainer``, or ``auto``.
ENGINES = ("auto", "loop", "trainer")


def resolve_engine(engine: str | None = "auto") -> str:
    """``loop`` or ``trainer``. ``auto`` (the default) is the ``Trainer`` under a multi-process launch
    (``torchrun``/``accelerate launch``: ``WORLD_SIZE`` > 1, where only it synchronises gradients) and the
    loop in one process; ``HELPERS_ENGINE`` overrides ``auto``."""
    import os

    from .distributed import world_size

    engine = (engine or "auto").strip().lower()
    if engine == "auto":
        engine = os.environ.get("HELPERS_ENGINE", "").strip().lower() or "auto"
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r} (or HELPERS_ENGINE)")
    if engine == "auto":
        engine = "trainer" if world_size() > 1 else "loop"
    if engine == "loop" and world_size() > 1:
        raise ValueError(f"engine 'loop' cannot train under a {world_size()}-process launch (no gradient sync); "
                         "use engine='trainer'")
    return engine


def batch_order(n: int, batch_size: int, total_batches: int, seed: int) -> list[list[int]]:
    """The example indices of each batch: a fresh seeded shuffle per epoch, batches may span two epochs
    (``epochs`` can be fractional). Both engines use it, so they see the same data in the same order."""
    rng = random.Random(seed)
    order: list[int] = []
    batches = []
    for _ in range(total_batches):
        if len(order) < batch_size:  # refill with a fresh seeded shuffle (one per epoch)
            fresh = list(range(n))
            rng.shuffle(fresh)
            order.extend(fresh)
        batches.append(order[:batch_size])
        order = order[batch_size:]
    return batches


def lr_multiplier(lr_schedule: str, warmup: int, total_updates: int):
    """``step -> factor`` of the peak learning rate: linear warm-up over ``warmup`` updates, then linear or
    cosine decay to 0 (the shapes of transformers' schedulers)."""
    if lr_schedule not in ("linear", "cosine"):
        raise ValueError(f"lr_schedule must be 'linear' or 'cosine', got {lr_schedule!r}")

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress_ = (step - warmup) / max(1, total_updates - warmup)
        if lr_schedule == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress_)))
        return max(0.0, 1.0 - progress_)

    return schedule


def finetune(
    model_or_name=None,
    examples: Sequence[dict] = (),
    *,
    tokenizer=None,
    epochs: float = 3,
    lr: float = 5e-5,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 512,
    lora: bool = False,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    merge_lora: bool = True,
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.03,
    lr_schedule: str = "linear",
    max_grad_norm: float = 1.0,
    system: str | None = None,
    seed: int = 0,
    device: str | None = None,
    inplace: bool = False,
    gradient_checkpointing: bool = False,
    train_layers: int | None = None,
    progress: bool = True,
    desc: str = "fine-tuning",
    engine: str = "auto",
    checkpoint_dir=None,
    save_steps: int = 50,
):
    """Fine-tune a causal LM on ``examples`` and return the trained model (in eval mode).

    ``model_or_name``: a model name for :func:`helpers.common.models.load_model` (``None`` = the embedded
    SmolLM2-135M-Instruct; loaded fresh in float32) or an already loaded model — then pass ``tokenizer``
    too (else it is loaded from the model's name). ``examples``: dicts with ``"prompt"`` (a string or chat
    messages), ``"response"`` and optionally ``"system"`` (overrides the ``system`` argument).
    ``epochs`` may be fractional. ``lora=True`` trains LoRA adapters on all linear projections (merged
    back unless ``merge_lora=False``). ``train_layers=N`` trains only the last ``N`` transformer blocks and
    the final norm (embeddings, output head and lower blocks frozen): a CPU speed knob, since the backward
    pass then stops early — about twice as fast for the embedded model with ``N`` ≤ 4. The tokenizer used
    is attached as ``model.student_tokenizer``. The learning rate warms up linearly over ``warmup_ratio`` of
    the updates, then decays to 0 linearly or (``lr_schedule="cosine"``, the LLM2LLM reference) along a cosine;
    the effective batch is ``batch_size × grad_accum``. ``checkpoint_dir``: save a checkpoint there every
    ``save_steps`` updates and, rerun with the same settings, resume from the newest one (the ``Trainer``
    engine's; the folder is removed once training ends; see :func:`~helpers.common.trainer_engine.train_with_trainer`).
    """
    import torch

    from .models import load_model, load_tokenizer, pick_device

    examples = _validate(examples)
    if checkpoint_dir is not None and (engine or "auto") == "auto":
        engine = "trainer"  # checkpoints are the Trainer's
    engine = resolve_engine(engine)
    if checkpoint_dir is not None and (engine != "trainer" or save_steps < 1):
        raise ValueError(f"checkpoint_dir needs engine='trainer' and save_steps ≥ 1 (got {engine!r}, {save_steps})")
    set_seed(seed)
    if model_or_name is None or isinstance(model_or_name, str):
        device = pick_device(device)
        dtype = torch.bfloat16 if (lora and device.startswith("cuda")) else torch.float32
        model, tok = load_model(model_or_name, device=device, dtype=dtype)
        tokenizer = tokenizer or tok
    else:
        model = model_or_name if inplace else copy.deepcopy(model_or_name)
        if tokenizer is None:
            tokenizer = load_tokenizer(getattr(model, "name_or_path_for_course", None))
        if device is not None:
            model.to(device)
    device = str(next(model.parameters()).device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, task_type="CAUSAL_LM",
                            target_modules="all-linear")
        model = get_peft_model(model, config)
    if train_layers is not None:
        _freeze_lower_layers(model, train_layers)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()

    encoded = [encode_example(tokenizer, ex["prompt"], ex["response"], system=ex.get("system", system),
                              max_length=max_length) for ex in examples]
    steps_per_epoch = math.ceil(len(encoded) / batch_size)
    total_batches = max(1, round(steps_per_epoch * epochs))
    total_updates = max(1, math.ceil(total_batches / grad_accum))
    warmup = int(warmup_ratio * total_updates)
    schedule = lr_multiplier(lr_schedule, warmup, total_updates)
    batches = batch_order(len(encoded), batch_size, total_batches, seed)
    history = {"loss": [], "lr": [], "examples": len(encoded), "epochs": epochs, "seed": seed, "lora": lora,
               "precision": precision(str(next(model.parameters()).device)),
               "engine": engine}
    start = time.time()
    if engine == "trainer":
        from .distributed import world_size
        from .io import settings_hash
        from .trainer_engine import train_with_trainer

        run_id = settings_hash({"model": getattr(model, "name_or_path_for_course", None), "lr": lr,
                                "encoded": [[e["input_ids"], e["labels"]] for e in encoded], "batches": batches,
                                "updates": [total_updates, warmup, lr_schedule, grad_accum], "seed": seed,
                                "other": [lora, lora_r, lora_alpha, train_layers, weight_decay, max_grad_norm],
                                "world_size": world_size()}) if checkpoint_dir is not None else None
        history.update(train_with_trainer(model, tokenizer, encoded, batches, lr=lr, schedule=schedule,
                                          batch_size=batch_size, grad_accum=grad_accum, weight_decay=weight_decay,
                                          max_grad_norm=max_grad_norm, seed=seed, progress=progress,
                                          checkpoint_dir=checkpoint_dir, save_steps=save_steps, run_id=run_id))
    else:
        _train_loop(model, tokenizer, encoded, batches, history, lr=lr, schedule=schedule, grad_accum=grad_accum,
                    weight_decay=weight_decay, max_grad_norm=max_grad_norm, progress=progress, desc=desc)
    if gradient_checkpointing:
        model.gradient_checkpointing_disable()
    if lora and merge_lora:
        model = model.merge_and_unload()
    if train_layers is not None and (not lora or merge_lora):
        for p in model.parameters():  # a plain model again: everything trainable, as after loading
            p.requires_grad_(True)
    model.eval()
    history["seconds"] = time.time() - start
    model.finetune_history = history
    model.student_tokenizer = tokenizer
    if not hasattr(model, "name_or_path_for_course") and hasattr(model_or_name, "name_or_path_for_course"):
        model.name_or_path_for_course = model_or_name.name_or_path_for_course
    return model


def _train_loop(model, tokenizer, encoded, batches, history, *, lr, schedule, grad_accum, weight_decay,
                max_grad_norm, progress, desc) -> None:
    """The plain PyTorch engine: AdamW, the schedule, clipping, accumulation; one process."""
    import torch

    device = str(next(model.parameters()).device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    keep_logits = _accepts_logits_to_keep(model)
    cuda = device.startswith("cuda")
    autocast_dtype = torch.bfloat16 if (cuda and torch.cuda.is_bf16_supported()) else torch.float16
    # CUDA: fp16/bf16 autocast; CPU: bf16 autocast where the CPU has native bf16 (float32 master weights)
    mixed = (torch.autocast("cuda", dtype=autocast_dtype) if cuda else compute_autocast(device))
    total_batches = len(batches)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(range(total_batches), desc=desc, disable=not progress, leave=False)
    for batch_number in bar:
        batch = {k: v.to(device) for k, v in
                 _collate([encoded[i] for i in batches[batch_number]], tokenizer.pad_token_id).items()}
        with mixed:
            loss = _response_loss(model, batch, keep_logits)
        (loss / grad_accum).backward()
        if (batch_number + 1) % grad_accum == 0 or batch_number + 1 == total_batches:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        history["loss"].append(float(loss.detach()))
        history["lr"].append(scheduler.get_last_lr()[0])
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
    bar.close()


def mean_loss(model, tokenizer, examples: Sequence[dict], *, batch_size: int = 8, max_length: int = 512,
              system: str | None = None) -> float:
    """The average response-only loss of ``model`` on ``examples`` (a quick check that training learned)."""
    import torch

    examples = _validate(examples)
    device = next(model.parameters()).device
    encoded = [encode_example(tokenizer, ex["prompt"], ex["response"], system=ex.get("system", system),
                              max_length=max_length) for ex in examples]
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            batch = {k: v.to(device) for k, v in _collate(encoded[i:i + batch_size], tokenizer.pad_token_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            shift_logits, shift_labels = logits[:, :-1], batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                     shift_labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                                     reduction="sum")
            total += float(loss)
            tokens += int((shift_labels != IGNORE_INDEX).sum())
    if was_training:
        model.train()
    return total / max(1, tokens)
