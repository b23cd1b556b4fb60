"""The student fine-tuner on the Hugging Face engine: ``finetune(..., engine="trainer")``.

:func:`helpers.common.training.finetune` prepares everything the same way for both engines (the one prompt
format, response-only labels with the end-of-turn token, ``train_layers``, LoRA, the copy, the seed, the data
order of :func:`~helpers.common.training.batch_order`, the learning-rate shape of
:func:`~helpers.common.training.lr_multiplier`); this module hands the batches to ``transformers.Trainer``, so
that DDP, FSDP and DeepSpeed come from ``torchrun`` / ``accelerate launch`` and a config file
(``configs/accelerate/``), not from code of ours. What we add to the ``Trainer`` and why:

* **The data order**: a sequential sampler over the batches already drawn, so one process sees exactly what the
  plain loop sees; under ``N`` processes accelerate gives each rank ``batch_size / N`` of every batch (a
  different shard per rank, the same global batch).
* **The loss**: the sum of the response tokens' cross-entropy divided by the response tokens of the whole
  update (all ranks, all accumulated micro-batches; the ``Trainer`` counts them), so the gradient of ``N``
  processes equals the one-process gradient of the same global batch, not a mean of per-rank means.
  Computed with ``logits_to_keep`` from the first response position, as in the loop.
* **The schedule**: the loop's warm-up-then-decay multiplier (``create_scheduler``), so both engines step the
  same learning rates.

With ``grad_accum`` = 1 and one process the per-step losses equal the loop's (tested to 1e-5). With
``grad_accum`` > 1 they differ by design: the loop averages the micro-batches' means, the ``Trainer`` weighs every
response token of the update equally (what a single batch of that size would do).
"""
from __future__ import annotations

import tempfile


def _trainer_class():
    import torch
    from transformers import Trainer

    from .training import _response_loss

    class ResponseOnlyTrainer(Trainer):
        """``Trainer`` with the course's batches, response-token loss and learning-rate shape."""

        def __init__(self, *args, schedule=None, keep_logits=True, **kwargs):
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = True  # makes the Trainer count the update's response tokens
            self.loss_is_scaled_for_ga = True  # our loss is already divided by them
            self._schedule, self._keep_logits, self.step_loss, self.slots = schedule, keep_logits, 0.0, []

        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self._schedule)
                self._created_lr_scheduler = True
            return self.lr_scheduler

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # which slots of the training order this micro-batch holds (recorded here, not in the collator:
            # accelerate's data loader collates one batch ahead of the one being trained)
            self.slots.extend(inputs.pop("course_slots").tolist())
            total = _response_loss(model, inputs, self._keep_logits, reduction="sum")
            tokens = num_items_in_batch
            if tokens is None:
                tokens = int((inputs["labels"][:, 1:] != -100).sum())
            loss = total / tokens
            self.step_loss += float(loss.detach())
            if self.accelerator.num_processes > 1:  # DDP averages gradients over ranks; undo it for a global mean
                loss = loss * self.accelerator.num_processes
            return (loss, None) if return_outputs else loss

    return ResponseOnlyTrainer


class _Examples:
    """The examples in training order (one entry per slot of every batch)."""

    def __init__(self, encoded, batches):
        self.items = [dict(encoded[i], slot=n) for n, i in enumerate(i for batch in batches for i in batch)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def check_checkpoint_dir(checkpoint_dir, run_id: str) -> str | None:
    """The newest ``checkpoint-N`` folder of ``checkpoint_dir`` to resume from (``None``: start afresh);
    ``ValueError`` when the folder holds checkpoints of a run with other settings (``run.json``'s hash)."""
    import json
    from pathlib import Path

    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(checkpoint_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: is a file; the checkpoint folder must be a folder")
    marker = folder / "run.json"
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text(encoding="utf-8")).get("run")
        except (ValueError, AttributeError):
            saved = None
        if saved != run_id:
            raise ValueError(f"{folder}: holds the checkpoints of a fine-tuning run with other settings (data, "
                             "hyper-parameters or number of processes); remove it or use another folder")
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def mark_checkpoints(checkpoint_dir, run_id: str) -> None:
    """Once every rank has read ``checkpoint_dir`` (:func:`check_checkpoint_dir`, and what it resumes from), rank 0
    marks it as this run's (``run.json``). Shared by the course's ``Trainer`` engine and TRL's DPO."""
    from pathlib import Path

    from .distributed import barrier, is_main_process
    from .io import atomic_write_json

    barrier()  # every rank has read the folder before rank 0 writes to it
    if is_main_process():
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(checkpoint_dir) / "run.json", {"run": run_id})


def close_checkpoints(checkpoint_dir) -> None:
    """Trained to the end: the checkpoints have done their job (rank 0 removes the folder once all ranks are done)."""
    import shutil

    from .distributed import barrier, is_main_process

    barrier()
    if is_main_process():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)


def saving_arguments(checkpoint_dir, save_steps) -> dict:
    """``TrainingArguments`` settings: a checkpoint every ``save_steps`` updates, the newest one kept."""
    if checkpoint_dir is None:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": save_steps or 50, "save_total_limit": 1}


def train_with_trainer(model, tokenizer, encoded, batches, *, lr, schedule, batch_size, grad_accum, weight_decay,
                       max_grad_norm, seed, progress, checkpoint_dir=None, save_steps=None, run_id=None) -> dict:
    """Train ``model`` in place on ``batches`` of ``encoded`` examples; returns ``{"loss", "lr", "world_size",
    "rank_slots"}``: the global mean response loss and the learning rate of every update, the number of
    processes, and which slots of the training order (batch × position) this rank trained on. Gradient
    checkpointing, LoRA and frozen blocks are already set on ``model`` by ``finetune``.

    ``checkpoint_dir``: the ``Trainer`` saves a checkpoint there every ``save_steps`` updates (weights, optimizer,
    schedule, random states, and the losses so far; the newest one kept) and a rerun with the same ``run_id``
    resumes from the newest, skipping the batches already trained; the folder is removed when training ends.
    Under several processes it must be one folder every rank sees."""
    import json
    from pathlib import Path

    import torch
    from transformers import TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .distributed import rank, world_size
    from .io import atomic_write_json
    from .models import cpu_autocast_dtype
    from .training import _accepts_logits_to_keep, _collate

    world = world_size()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {world} processes (each rank takes "
                         f"batch_size / {world} of every batch)")
    cuda = str(next(model.parameters()).device).startswith("cuda")  # train where the model is, as the loop does
    history = {"loss": [], "lr": [], "world_size": world, "rank_slots": []}
    resume = None
    if checkpoint_dir is not None:
        resume = check_checkpoint_dir(checkpoint_dir, run_id)
        if resume is not None:  # the losses, rates and slots of the steps already done
            history = json.loads((Path(resume) / f"course_history_rank{rank()}.json").read_text(encoding="utf-8"))
            history["resumed_from_step"] = int(Path(resume).name.split("-")[-1])
        mark_checkpoints(checkpoint_dir, run_id)

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            value = torch.tensor(trainer.step_loss)
            if world > 1:
                value = trainer.accelerator.reduce(value.to(trainer.accelerator.device), reduction="sum").cpu()
            history["loss"].append(float(value))
            history["lr"].append(trainer.lr_scheduler.get_last_lr()[0])
            trainer.step_loss = 0.0

        def on_save(self, args, state, control, **kwargs):  # the course's history beside the Trainer's state
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            atomic_write_json(folder / f"course_history_rank{rank()}.json", history)

    def collate(items):
        return dict(_collate(items, tokenizer.pad_token_id), course_slots=torch.tensor([i["slot"] for i in items]))

    saving = saving_arguments(checkpoint_dir, save_steps)
    with tempfile.TemporaryDirectory(prefix="helpers-trainer-") as scratch:
        out = str(checkpoint_dir) if checkpoint_dir is not None else scratch
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size // world, gradient_accumulation_steps=grad_accum,
            num_train_epochs=1, learning_rate=lr, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
            adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, optim="adamw_torch", warmup_steps=0,
            logging_strategy="no", **saving, report_to="none", disable_tqdm=not progress, seed=seed,
            data_seed=seed, use_cpu=not cuda,
            # bf16 mixed precision: on a GPU that has it; on a CPU with native bf16 unless HELPERS_DTYPE=float32
            # (accelerate then runs the forward under CPU bf16 autocast, as the plain loop does)
            bf16=(cuda and torch.cuda.is_bf16_supported()) or (not cuda and cpu_autocast_dtype() is not None),
            remove_unused_columns=False, dataloader_num_workers=0, average_tokens_across_devices=True,
            ddp_find_unused_parameters=False,
            dataloader_drop_last=False,
        )
        trainer = _trainer_class()(model=model, args=args, train_dataset=_Examples(encoded, batches),
                                   data_collator=collate, schedule=schedule,
                                   keep_logits=_accepts_logits_to_keep(model), callbacks=[Record()])
        trainer.slots = history["rank_slots"]  # the slots of a resumed run's earlier steps, then the new ones
        trainer.remove_callback(PrinterCallback)
        if not progress:
            trainer.remove_callback(ProgressCallback)
        trainer.train(resume_from_checkpoint=resume)
    if checkpoint_dir is not None:
        close_checkpoints(checkpoint_dir)
    trainer.model.eval()
    return history
