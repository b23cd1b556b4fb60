"""The detoxification baselines that train (chapter 05): SFT, DPO and RLHF.

*Global* methods for :mod:`helpers.safeedit.harness` (``per_instance = False``): each trains once in
:meth:`prepare` on SafeEdit training records (adversarial prompt, safe generation, unsafe generation) and
returns a **new** model; the base model object passed in is never modified, so the next method starts from
the same weights.

* :class:`SFTMethod` (``sft``) — supervised fine-tuning on *adversarial prompt → safe generation*
  (response-only loss), with :func:`helpers.common.training.finetune` (full fine-tuning or LoRA).
* :class:`DPOMethod` (``dpo``) — TRL's ``DPOTrainer``: chosen = safe generation, rejected = unsafe
  generation, reference = a frozen copy of the base model.
* :class:`helpers.detox.rlhf.RLHFMethod` (``rlhf``) — TRL's ``RLOOTrainer``, reward = the safety judge (its own
  module; it shares the training pairs and arguments defined here).

Under torchrun / accelerate every batch option is the *global* batch, split over the ranks (a batch that does not
split is refused when the method is built, before any model loads).

Training inputs are long jailbreak prompts: every method shortens the *prompt text* to its last
``max_prompt_tokens`` tokens (the question is usually at the end) and the responses to
``max_response_tokens`` before the chat template is applied, so the template stays intact.
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Sequence

from ..common.config import get_scale, set_seed
from ..safeedit.data import SafeEditFormatError, validate_safeedit
from ..safeedit.harness import Method

# ----------------------------------------------------------------------------------------------------
# Training data from SafeEdit records
# ----------------------------------------------------------------------------------------------------


def shorten(tokenizer, text: str, max_tokens: int | None, keep: str = "end") -> str:
    """``text`` cut to at most ``max_tokens`` tokens, keeping its ``"end"`` (prompts) or ``"start"`` (responses)."""
    text = text.strip()
    if max_tokens is None:
        return text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    ids = ids[-max_tokens:] if keep == "end" else ids[:max_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def training_pairs(records: Sequence[dict], tokenizer=None, *, max_prompt_tokens: int | None = None,
                   max_response_tokens: int | None = None, source: str = "<train records>") -> list[dict]:
    """``{"id", "prompt", "chosen", "rejected"}`` per SafeEdit record: the adversarial prompt, the safe and
    the unsafe generation (shortened when ``tokenizer`` and the limits are given).

    Raises :class:`SafeEditFormatError` naming the record id and field when a generation is empty.
    """
    records = validate_safeedit(list(records), source=source)
    if not records:
        raise ValueError(f"{source}: no training records")
    pairs = []
    for record in records:
        for field in ("adversarial prompt", "safe generation", "unsafe generation"):
            if not record[field].strip():
                raise SafeEditFormatError(f"{source}: record id {record['id']}: field {field!r} is empty; "
                                          "the baselines train on the adversarial prompt and both generations")
        prompt, chosen, rejected = record["adversarial prompt"], record["safe generation"], record["unsafe generation"]
        if tokenizer is not None:
            prompt = shorten(tokenizer, prompt, max_prompt_tokens, keep="end")
            chosen = shorten(tokenizer, chosen, max_response_tokens, keep="start")
            rejected = shorten(tokenizer, rejected, max_response_tokens, keep="start")
        pairs.append({"id": record["id"], "prompt": prompt, "chosen": chosen.strip(), "rejected": rejected.strip()})
    return pairs


def load_train_records(spec: str = "three,built", limit: int | None = None) -> list[dict]:
    """Training records from a comma-separated list of sources (``three``, ``built`` = built train split, a
    file path); ids are made unique (``source index × 10⁶ + id``) when sources collide. Missing sources are
    skipped with a message; at least one must exist."""
    from ..common.datasets import DataNotAvailableError
    from ..safeedit.data import load_safeedit

    out: list[dict] = []
    seen: set[int] = set()
    missing = []
    for number, name in enumerate(s.strip() for s in spec.split(",") if s.strip()):
        try:
            records = load_safeedit(name, split="train")
        except (DataNotAvailableError, FileNotFoundError) as err:
            missing.append(f"{name}: {err}")
            continue
        for record in records:
            record = dict(record)
            if record["id"] in seen:
                record["id"] = number * 1_000_000 + record["id"]
            seen.add(record["id"])
            out.append(record)
    for line in missing:
        print(f"training source skipped — {line}")
    if not out:
        raise ValueError(f"no training records found in {spec!r}: " + "; ".join(missing))
    return out[:limit] if limit is not None else out


# ----------------------------------------------------------------------------------------------------
# Cheap teacher-forced measurements (no generation): used by tests and chapter 05
# ----------------------------------------------------------------------------------------------------


def sequence_logprobs(model, tokenizer, prompts: Sequence, responses: Sequence[str], *,
                      max_length: int = 1024, end_of_turn: bool = True) -> list[float]:
    """Sum of log p(response tokens | chat prompt) per pair, in the prompt format of :mod:`helpers.common.training`.

    ``end_of_turn=False`` scores the response tokens alone (e.g. sampled completions that were cut off).
    """
    import torch

    from ..common.generation import chat_prompt
    from ..common.training import IGNORE_INDEX, encode_example

    device = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for prompt, response in zip(prompts, responses):
            if end_of_turn:
                ex = encode_example(tokenizer, prompt, response, max_length=max_length)
            else:
                p_ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
                r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
                p_ids = p_ids[-max(1, max_length - len(r_ids)):]
                ex = {"input_ids": p_ids + r_ids, "labels": [IGNORE_INDEX] * len(p_ids) + r_ids}
            ids = torch.tensor([ex["input_ids"]], device=device)
            labels = torch.tensor(ex["labels"][1:], device=device)
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            mask = labels != IGNORE_INDEX
            out.append(float(logp[mask].gather(-1, labels[mask].unsqueeze(-1)).sum()))
    if was_training:
        model.train()
    return out


def preference_margin(model, tokenizer, pairs: Sequence[dict], **kwargs) -> float:
    """Mean of log p(chosen) − log p(rejected) over ``pairs`` (the quantity DPO pushes up)."""
    prompts = [p["prompt"] for p in pairs]
    chosen = sequence_logprobs(model, tokenizer, prompts, [p["chosen"] for p in pairs], **kwargs)
    rejected = sequence_logprobs(model, tokenizer, prompts, [p["rejected"] for p in pairs], **kwargs)
    return sum(c - r for c, r in zip(chosen, rejected)) / len(pairs)


def response_nll(model, tokenizer, pairs: Sequence[dict], which: str = "chosen", **kwargs) -> float:
    """Mean per-token NLL of the ``chosen`` (safe) or ``rejected`` (unsafe) responses (what SFT lowers)."""
    from ..common.training import mean_loss

    return mean_loss(model, tokenizer, [{"prompt": p["prompt"], "response": p[which]} for p in pairs], **kwargs)


# ----------------------------------------------------------------------------------------------------
# Shared machinery of the trained baselines
# ----------------------------------------------------------------------------------------------------


def _device(model) -> str:
    return str(next(model.parameters()).device)


def _unpatch(model):
    """Undo TRL's instance-level ``forward`` patch (the fused LM head) so the returned model is plain."""
    inner = getattr(model, "get_base_model", lambda: model)()
    for m in {id(model): model, id(inner): inner}.values():
        m.__dict__.pop("forward", None)
    return model


def _finish(model, base):
    model = _unpatch(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if hasattr(base, "name_or_path_for_course"):
        model.name_or_path_for_course = base.name_or_path_for_course
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = base.generation_config.pad_token_id
    return model


def _training_args(config_cls, *, steps: int, batch_size: int, grad_accum: int, lr: float, seed: int,
                   progress: bool, output_dir: str, checkpoint_dir=None, save_steps=None, **extra):
    """TRL/transformers training arguments for a short, unsaved, unlogged-to-the-cloud run on CPU or CUDA.

    ``batch_size`` is the global batch of one forward (all processes together): under torchrun / accelerate each
    of the N ranks takes ``batch_size / N`` of it, so an update sees the same examples however many processes run
    (TRL's own ``per_device_train_batch_size`` would multiply the batch by N). With ``checkpoint_dir`` the
    trainer writes there (instead of ``output_dir``, a scratch folder) a checkpoint every ``save_steps`` updates."""
    import torch

    from ..common.distributed import world_size
    from ..common.trainer_engine import saving_arguments

    cuda = torch.cuda.is_available()
    return config_cls(
        output_dir=str(checkpoint_dir or output_dir), max_steps=steps,
        per_device_train_batch_size=batch_size // world_size(),
        gradient_accumulation_steps=grad_accum, learning_rate=lr, lr_scheduler_type="constant",
        warmup_steps=0, seed=seed, data_seed=seed, report_to="none", logging_steps=1,
        **saving_arguments(checkpoint_dir, save_steps),
        disable_tqdm=not progress, use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=False, dataloader_num_workers=0, **extra)


def _quiet(trainer, progress: bool):
    """Without a progress bar transformers prints every log dict (``PrinterCallback``); the history is kept in
    ``trainer.state.log_history`` anyway, so drop the printing (it fills notebook outputs with raw dicts)."""
    from transformers.trainer_callback import PrinterCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


def _lora_config(r: int, alpha: int, dropout: float = 0.0):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, task_type="CAUSAL_LM", target_modules="all-linear")


class _TrainedMethod(Method):
    """Common options: which records, how much they are shortened, seed, scale-dependent defaults."""

    #: option → (small default, full default); subclasses extend it.
    DEFAULTS: dict[str, tuple] = {
        "limit": (8, None),                  # training records used (None: all)
        "max_prompt_tokens": (192, 768),
        "max_response_tokens": (64, 256),
        # checkpoint resume (transformers' Trainer, TRL's trainers): a folder, and every how many updates to save
        "checkpoint_dir": (None, None),
        "save_steps": (50, 50),
    }

    def __init__(self, scale: str | None = None, seed: int = 0, progress: bool = True, **options):
        scale = scale or get_scale()
        unknown = set(options) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown option(s) {sorted(unknown)}; "
                            f"known: {sorted(self.DEFAULTS)}")
        index = 0 if scale == "small" else 1
        self.settings = {k: v[index] for k, v in self.DEFAULTS.items()}
        self.settings.update(options)
        self.scale, self.seed, self.progress = scale, seed, progress
        self.history: dict = {}
        self.check_batch_split()
        self.check_checkpoint_options(options)

    def check_checkpoint_options(self, options: dict):
        """``save_steps`` a whole number ≥ 1 and only with ``checkpoint_dir``; that folder not a file (before any
        model loads)."""
        steps = self.settings["save_steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"save_steps must be a whole number ≥ 1 (got {steps!r})")
        folder = self.settings["checkpoint_dir"]
        if "save_steps" in options and folder is None:
            raise ValueError("save_steps needs checkpoint_dir (the folder the checkpoints go to)")
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise ValueError(f"checkpoint_dir {folder}: exists and is not a folder")

    def run_id(self, model, pairs) -> str:
        """What a checkpoint folder must have been written by to be resumed: the method, its training settings,
        the seed, the training pairs, the model and the number of processes."""
        from ..common.distributed import world_size
        from ..common.io import settings_hash

        keep = {k: v for k, v in self.settings.items() if k not in ("checkpoint_dir", "save_steps")}
        return settings_hash({"method": self.name, "settings": keep, "seed": self.seed, "pairs": list(pairs),
                              "model": getattr(model, "name_or_path_for_course", None)
                              or getattr(model.config, "_name_or_path", ""), "world_size": world_size()})

    def train_resumably(self, trainer, model, pairs):
        """``trainer.train()``, resuming from the newest checkpoint in ``checkpoint_dir`` when one is set (TRL's
        trainers are ``transformers.Trainer`` subclasses: weights, optimizer, schedule and random states come
        back, the batches already trained are skipped); the folder goes once training ends."""
        from ..common.trainer_engine import check_checkpoint_dir, close_checkpoints, mark_checkpoints

        folder, resume = self.settings["checkpoint_dir"], None
        if folder is not None:
            run_id = self.run_id(model, pairs)
            resume = check_checkpoint_dir(folder, run_id)
            mark_checkpoints(folder, run_id)
        trainer.train(resume_from_checkpoint=resume)
        if resume is not None:
            self.history["resumed_from_step"] = int(Path(resume).name.split("-")[-1])
        if folder is not None:
            close_checkpoints(folder)

    def global_batch(self) -> tuple[str, int]:
        """(option, size) of the batch one forward takes over all processes (split over the ranks)."""
        return "batch_size", self.settings["batch_size"]

    def check_batch_split(self):
        """Under N processes every rank takes 1/N of each batch: refuse a batch that does not split (before any
        model loads)."""
        from ..common.distributed import world_size

        option, size = self.global_batch()
        if size % world_size():
            raise ValueError(f"{option} {size} must be a multiple of the {world_size()} processes (each rank takes "
                             f"1/{world_size()} of every batch)")

    def options(self) -> dict:
        """The settings used (for results files)."""
        return {"scale": self.scale, "seed": self.seed, **self.settings}

    def pairs(self, tokenizer, train_records) -> list[dict]:
        if not train_records:
            raise ValueError(f"{self.name}: prepare() needs training records (SafeEdit train records: "
                             "load_safeedit('three') or load_safeedit('built', split='train'))")
        records = list(train_records)
        if self.settings["limit"] is not None:
            records = records[: self.settings["limit"]]
        return training_pairs(records, tokenizer, max_prompt_tokens=self.settings["max_prompt_tokens"],
                              max_response_tokens=self.settings["max_response_tokens"])

    def prepare(self, model, tokenizer, train_records=None):
        set_seed(self.seed)
        pairs = self.pairs(tokenizer, train_records)
        start = time.perf_counter()
        trained = self.train(model, tokenizer, pairs)
        self.history["train_seconds"] = time.perf_counter() - start
        self.history["n_train_pairs"] = len(pairs)
        return _finish(trained, model)

    def train(self, model, tokenizer, pairs):  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------
# SFT
# ----------------------------------------------------------------------------------------------------


class SFTMethod(_TrainedMethod):
    """Supervised fine-tuning on adversarial prompt → safe generation (:func:`helpers.common.training.finetune`)."""

    name = "sft"
    DEFAULTS = {**_TrainedMethod.DEFAULTS, "epochs": (2, 3), "lr": (5e-5, 1e-5), "batch_size": (4, 8),
                "lora": (False, False), "lora_r": (16, 16)}

    def train(self, model, tokenizer, pairs):
        from ..common.training import finetune

        s = self.settings
        examples = [{"prompt": p["prompt"], "response": p["chosen"]} for p in pairs]
        resume = {} if s["checkpoint_dir"] is None else {"checkpoint_dir": s["checkpoint_dir"],
                                                          "save_steps": s["save_steps"]}
        trained = finetune(model, examples, tokenizer=tokenizer, epochs=s["epochs"], lr=s["lr"],
                           batch_size=s["batch_size"], lora=s["lora"], lora_r=s["lora_r"],
                           lora_alpha=2 * s["lora_r"], seed=self.seed, progress=self.progress, desc="SFT",
                           max_length=s["max_prompt_tokens"] + s["max_response_tokens"] + 64, **resume)
        self.history["loss"] = list(trained.finetune_history["loss"])
        self.history.update({k: trained.finetune_history[k] for k in ("engine", "world_size", "precision",
                                                                      "resumed_from_step")
                             if k in trained.finetune_history})
        return trained


# ----------------------------------------------------------------------------------------------------
# DPO (TRL)
# ----------------------------------------------------------------------------------------------------


def _conversational(pairs: Sequence[dict], *fields: str):
    from datasets import Dataset

    rows = []
    for p in pairs:
        row = {"prompt": [{"role": "user", "content": p["prompt"]}]}
        for f in fields:
            row[f] = [{"role": "assistant", "content": p[f]}]
        rows.append(row)
    return Dataset.from_list(rows)


class DPOMethod(_TrainedMethod):
    """Direct preference optimisation with TRL's ``DPOTrainer`` (chosen = safe, rejected = unsafe)."""

    name = "dpo"
    DEFAULTS = {**_TrainedMethod.DEFAULTS, "steps": (4, 500), "lr": (5e-6, 5e-7), "beta": (0.1, 0.1),
                "batch_size": (2, 8), "grad_accum": (1, 2), "lora": (False, False), "lora_r": (16, 16)}

    def train(self, model, tokenizer, pairs):
        from trl import DPOConfig, DPOTrainer

        s = self.settings
        policy = copy.deepcopy(model)
        policy.train()
        for p in policy.parameters():
            p.requires_grad_(True)
        ref = None if s["lora"] else copy.deepcopy(model).eval()
        with tempfile.TemporaryDirectory() as tmp:
            args = _training_args(DPOConfig, steps=s["steps"], batch_size=s["batch_size"],
                                  grad_accum=s["grad_accum"], lr=s["lr"], seed=self.seed, progress=self.progress,
                                  output_dir=tmp, beta=s["beta"], checkpoint_dir=s["checkpoint_dir"],
                                  save_steps=s["save_steps"],
                                  max_length=s["max_prompt_tokens"] + s["max_response_tokens"] + 64)
            trainer = DPOTrainer(model=policy, ref_model=ref, args=args,
                                 train_dataset=_conversational(pairs, "chosen", "rejected"),
                                 processing_class=copy.deepcopy(tokenizer),
                                 peft_config=_lora_config(s["lora_r"], 2 * s["lora_r"]) if s["lora"] else None)
            self.train_resumably(_quiet(trainer, self.progress), model, pairs)
        _record_log(self.history, trainer)
        trained = trainer.model
        del trainer, ref
        if s["lora"]:
            trained = trained.merge_and_unload()
        return trained


def _record_log(history: dict, trainer):
    """The trainer's log (every logged dict), its loss per update (averaged over the ranks by transformers) and
    the number of processes."""
    from ..common.distributed import world_size

    history["log"] = [dict(x) for x in trainer.state.log_history]
    history["loss"] = [x["loss"] for x in history["log"] if "loss" in x]
    history["engine"], history["world_size"] = "trl", world_size()
