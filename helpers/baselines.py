"""The detoxification baselines of the DINM paper (chapter 05) and its main table (chapter 06).

Four *global* methods for :mod:`helpers.harness` (``per_instance = False``): each trains once in
:meth:`prepare` on SafeEdit training records (adversarial prompt, safe generation, unsafe generation) and
returns a **new** model; the base model object passed in is never modified, so the next method starts from
the same weights.

* :class:`SFTMethod` (``sft``) — supervised fine-tuning on *adversarial prompt → safe generation*
  (response-only loss), with :func:`helpers.student.finetune` (full fine-tuning or LoRA).
* :class:`DPOMethod` (``dpo``) — TRL's ``DPOTrainer``: chosen = safe generation, rejected = unsafe
  generation, reference = a frozen copy of the base model.
* :class:`RLHFMethod` (``rlhf``) — TRL's ``RLOOTrainer`` (REINFORCE leave-one-out), reward = 1 − the safety
  judge's probability of *unsafe*, minus β·KL(policy ‖ reference) per sequence. TRL 1.16 ships GRPO and RLOO
  but no longer PPO; RLOO is the one whose KL penalty goes into the reward, as in classic RLHF, and it needs
  no value model (a second copy of the network), which keeps it CPU-sized. LoRA by default, so the reference
  is the base model itself (adapters disabled).
* :class:`ExtSubMethod` (``ext-sub``) — Ext-Sub (Hu et al., 2023): an *expert* LoRA trained on safe
  responses, an *anti-expert* LoRA trained on unsafe responses; from each merged update matrix we extract the
  anti-expert's component along the (row-wise) common direction of the two, keep the rest as the
  **deficiency** and compute ``θ = θ_base + ΔW_expert − λ · deficiency`` (:func:`deficiency_component`).

Training inputs are long jailbreak prompts: every method shortens the *prompt text* to its last
``max_prompt_tokens`` tokens (the question is usually at the end) and the responses to
``max_response_tokens`` before the chat template is applied, so the template stays intact.

:func:`run_main_table` evaluates a list of methods with :func:`helpers.harness.evaluate_safeedit` and
records DS, DG_*, fluency, general performance, training/edit time and peak memory per method (resumable,
one atomic JSON write per method); :func:`table_markdown` renders it. CLI::

    python -m helpers safeedit-table --data sample --limit 4 --train-data three,built \
        --out results/safeedit_table.json
"""
from __future__ import annotations

import copy
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from .config import get_scale, set_seed
from .data import SafeEditFormatError, validate_safeedit
from .harness import Method, add_judge_arguments

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
    from .data import DataNotAvailableError, load_safeedit

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
    """Sum of log p(response tokens | chat prompt) per pair, in the prompt format of :mod:`helpers.student`.

    ``end_of_turn=False`` scores the response tokens alone (e.g. sampled completions that were cut off).
    """
    import torch

    from .generation import chat_prompt
    from .student import IGNORE_INDEX, encode_example

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
    from .student import mean_loss

    return mean_loss(model, tokenizer, [{"prompt": p["prompt"], "response": p[which]} for p in pairs], **kwargs)


def tiny_causal_lm(tokenizer, *, layers: int = 2, hidden: int = 64, seed: int = 0):
    """A tiny randomly initialised Llama-architecture model for ``tokenizer`` (fast tests and dry runs of the
    training code; its text is gibberish)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


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
                   progress: bool, output_dir: str, **extra):
    """TRL/transformers training arguments for a short, unsaved, unlogged-to-the-cloud run on CPU or CUDA."""
    import torch

    cuda = torch.cuda.is_available()
    return config_cls(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, lr_scheduler_type="constant",
        warmup_steps=0, seed=seed, data_seed=seed, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=not progress, use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=False, dataloader_num_workers=0, **extra)


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
    """Supervised fine-tuning on adversarial prompt → safe generation (:func:`helpers.student.finetune`)."""

    name = "sft"
    DEFAULTS = {**_TrainedMethod.DEFAULTS, "epochs": (2, 3), "lr": (5e-5, 1e-5), "batch_size": (4, 8),
                "lora": (False, False), "lora_r": (16, 16)}

    def train(self, model, tokenizer, pairs):
        from .student import finetune

        s = self.settings
        examples = [{"prompt": p["prompt"], "response": p["chosen"]} for p in pairs]
        trained = finetune(model, examples, tokenizer=tokenizer, epochs=s["epochs"], lr=s["lr"],
                           batch_size=s["batch_size"], lora=s["lora"], lora_r=s["lora_r"],
                           lora_alpha=2 * s["lora_r"], seed=self.seed, progress=self.progress, desc="SFT",
                           max_length=s["max_prompt_tokens"] + s["max_response_tokens"] + 64)
        self.history["loss"] = list(trained.finetune_history["loss"])
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
                                  output_dir=tmp, beta=s["beta"],
                                  max_length=s["max_prompt_tokens"] + s["max_response_tokens"] + 64)
            trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=_conversational(pairs, "chosen", "rejected"),
                                 processing_class=copy.deepcopy(tokenizer),
                                 peft_config=_lora_config(s["lora_r"], 2 * s["lora_r"]) if s["lora"] else None)
            trainer.train()
        self.history["log"] = [dict(x) for x in trainer.state.log_history]
        trained = trainer.model
        del trainer, ref
        if s["lora"]:
            trained = trained.merge_and_unload()
        return trained


# ----------------------------------------------------------------------------------------------------
# RLHF (TRL RLOO, reward = safety judge)
# ----------------------------------------------------------------------------------------------------


def _completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


class RLHFMethod(_TrainedMethod):
    """RLHF with TRL's ``RLOOTrainer``: reward = 1 − P(unsafe) from the safety judge, KL penalty β to the base.

    ``judge``: a :class:`helpers.judge.Judge` or a judge name (default: the best offline judge, ``probe``
    when it exists, else ``keyword``). Every scored sample is kept in ``self.samples`` (prompt index, step,
    completion, reward), which is what the chapter shows and the tests check.
    """

    name = "rlhf"
    DEFAULTS = {**_TrainedMethod.DEFAULTS, "steps": (4, 300), "lr": (1e-4, 1e-5), "beta": (0.05, 0.05),
                "num_generations": (4, 8), "prompts_per_step": (1, 4), "max_completion_length": (24, 128),
                "temperature": (1.0, 1.0), "lora": (True, True), "lora_r": (16, 16)}

    def __init__(self, judge=None, scale: str | None = None, seed: int = 0, progress: bool = True, **options):
        super().__init__(scale=scale, seed=seed, progress=progress, **options)
        self.judge = judge
        self.samples: list[dict] = []

    def _judge(self):
        from .harness import default_judge_name
        from .judge import get_judge

        if self.judge is None or isinstance(self.judge, str):
            self.judge = get_judge(self.judge or default_judge_name())
        return self.judge

    def reward_function(self) -> Callable:
        """The TRL reward function: 1 − P(unsafe) of each completion (empty → 0.5), logged in ``samples``."""
        judge = self._judge()

        def safety_reward(prompts, completions, **kwargs):
            texts = [_completion_text(c) for c in completions]
            probs = judge.predict_proba(texts)
            rewards = [0.5 if not t.strip() else 1.0 - float(p) for t, p in zip(texts, probs)]
            step = len({s["call"] for s in self.samples})
            for i, (text, reward) in enumerate(zip(texts, rewards)):
                self.samples.append({"call": step, "index": i, "prompt_id": kwargs.get("id", [None] * len(texts))[i],
                                     "completion": text, "reward": reward})
            return rewards

        safety_reward.__name__ = f"safety_{getattr(judge, 'name', 'judge')}"
        return safety_reward

    def train(self, model, tokenizer, pairs):
        from trl import RLOOConfig, RLOOTrainer

        s = self.settings
        self.samples = []
        policy = copy.deepcopy(model)
        policy.train()
        batch = s["num_generations"] * s["prompts_per_step"]
        dataset = _conversational(pairs).add_column("id", [p["id"] for p in pairs])
        tok = copy.deepcopy(tokenizer)
        with tempfile.TemporaryDirectory() as tmp:
            args = _training_args(RLOOConfig, steps=s["steps"], batch_size=batch, grad_accum=1, lr=s["lr"],
                                  seed=self.seed, progress=self.progress, output_dir=tmp, beta=s["beta"],
                                  num_generations=s["num_generations"],
                                  max_completion_length=s["max_completion_length"], temperature=s["temperature"],
                                  remove_unused_columns=False, shuffle_dataset=True)
            if not s["lora"]:
                for p in policy.parameters():
                    p.requires_grad_(True)
            trainer = RLOOTrainer(model=policy, reward_funcs=self.reward_function(), args=args,
                                  train_dataset=dataset, processing_class=tok,
                                  peft_config=_lora_config(s["lora_r"], 2 * s["lora_r"]) if s["lora"] else None)
            if not s["lora"] and s["beta"] != 0.0:
                # TRL would reload the reference from disk by name; use an exact frozen copy of the base instead.
                ref = copy.deepcopy(model).eval()
                from trl.trainer.utils import add_fused_lm_head

                add_fused_lm_head(ref, temperature=trainer.temperature)
                trainer.ref_model = ref
            trainer.train()
        self.history["log"] = [dict(x) for x in trainer.state.log_history]
        self.history["mean_reward_per_step"] = _mean_by(self.samples, "call", "reward")
        trained = trainer.model
        del trainer
        if s["lora"]:
            trained = trained.merge_and_unload()
        return trained


def _mean_by(rows: Sequence[dict], key: str, value: str) -> list[float]:
    groups: dict = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row[value])
    return [sum(v) / len(v) for _, v in sorted(groups.items())]


# ----------------------------------------------------------------------------------------------------
# Ext-Sub
# ----------------------------------------------------------------------------------------------------


def lora_deltas(peft_model) -> dict:
    """``{weight name in the base model: ΔW = scaling · B @ A}`` for every LoRA layer of a PEFT model."""
    import torch
    from peft.tuners.lora import LoraLayer

    deltas = {}
    prefix = "base_model.model."
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.lora_A:
                a = module.lora_A[adapter].weight.detach().float()
                b = module.lora_B[adapter].weight.detach().float()
                delta = (b @ a) * module.scaling[adapter]
                if getattr(module, "fan_in_fan_out", False):
                    delta = delta.T
                key = (name[len(prefix):] if name.startswith(prefix) else name) + ".weight"
                deltas[key] = deltas.get(key, torch.zeros_like(delta)) + delta
    if not deltas:
        raise ValueError("lora_deltas: the model has no LoRA layers")
    return deltas


def deficiency_component(expert: dict, anti_expert: dict, eps: float = 1e-12) -> dict:
    """Ext-Sub's extraction: per weight matrix and per row ``i``,

    ``c_i = normalise(ê_i + â_i)`` (the common direction of the expert and anti-expert rows, ê/â unit rows),
    ``deficiency_i = a_i − (a_i · c_i) c_i`` — the anti-expert's row with its common part removed.

    Rows where either update is zero have no common direction; there the deficiency is the anti-expert row
    itself when the expert row is zero (nothing shared) and zero when the anti-expert row is zero.
    """
    import torch

    out = {}
    for key, a in anti_expert.items():
        if key not in expert:
            raise KeyError(f"deficiency_component: {key!r} is in the anti-expert but not in the expert")
        e = expert[key].to(a.dtype)
        if e.shape != a.shape:
            raise ValueError(f"deficiency_component: {key!r} has shape {tuple(e.shape)} vs {tuple(a.shape)}")
        en, an = e.norm(dim=-1, keepdim=True), a.norm(dim=-1, keepdim=True)
        common = e / en.clamp_min(eps) + a / an.clamp_min(eps)
        cn = common.norm(dim=-1, keepdim=True)
        c = torch.where(cn > eps, common / cn.clamp_min(eps), torch.zeros_like(common))
        c = torch.where(en > eps, c, torch.zeros_like(c))  # no expert direction → nothing shared
        out[key] = a - (a * c).sum(-1, keepdim=True) * c
    return out


def add_to_weights(model, deltas: dict, scale: float = 1.0) -> None:
    """``W ← W + scale · ΔW`` in place for every named weight in ``deltas`` (zero deltas are skipped exactly)."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, delta in deltas.items():
            if key not in params:
                raise KeyError(f"add_to_weights: the model has no parameter {key!r}")
            if scale == 0 or not torch.any(delta):
                continue
            param = params[key]
            param.add_(delta.to(param.device, param.dtype), alpha=scale)


class ExtSubMethod(_TrainedMethod):
    """Ext-Sub: expert LoRA (safe responses) + anti-expert LoRA (unsafe responses) → subtract the deficiency.

    ``lam`` is λ (the Ext-Sub paper's α, 1.0 by default); ``use_expert=False`` applies only ``−λ·deficiency``.
    """

    name = "ext-sub"
    DEFAULTS = {**_TrainedMethod.DEFAULTS, "epochs": (2, 3), "lr": (3e-4, 2e-4), "batch_size": (4, 8),
                "lora_r": (8, 16), "lam": (1.0, 1.0), "use_expert": (True, True)}

    def lora_update(self, model, tokenizer, pairs, which: str) -> dict:
        """Train a LoRA on prompt → ``which`` (``chosen``/``rejected``) and return its merged update matrices."""
        from .student import finetune

        s = self.settings
        examples = [{"prompt": p["prompt"], "response": p[which]} for p in pairs]
        peft_model = finetune(model, examples, tokenizer=tokenizer, epochs=s["epochs"], lr=s["lr"],
                              batch_size=s["batch_size"], lora=True, lora_r=s["lora_r"], lora_alpha=2 * s["lora_r"],
                              lora_dropout=0.0, merge_lora=False, seed=self.seed, progress=self.progress,
                              desc=f"Ext-Sub {'expert' if which == 'chosen' else 'anti-expert'}",
                              max_length=s["max_prompt_tokens"] + s["max_response_tokens"] + 64)
        self.history[f"loss_{which}"] = list(peft_model.finetune_history["loss"])
        deltas = lora_deltas(peft_model)
        del peft_model
        return deltas

    def combine(self, model, expert: dict, anti_expert: dict):
        """A copy of ``model`` with ``ΔW_expert − λ·deficiency`` added (``model`` itself is not changed)."""
        deficiency = deficiency_component(expert, anti_expert)
        self.history["deficiency_norm"] = float(sum(d.norm() ** 2 for d in deficiency.values()) ** 0.5)
        self.history["anti_expert_norm"] = float(sum(d.norm() ** 2 for d in anti_expert.values()) ** 0.5)
        out = copy.deepcopy(model)
        if self.settings["use_expert"]:
            add_to_weights(out, expert, 1.0)
        add_to_weights(out, deficiency, -self.settings["lam"])
        return out

    def train(self, model, tokenizer, pairs):
        expert = self.lora_update(model, tokenizer, pairs, "chosen")
        anti = self.lora_update(model, tokenizer, pairs, "rejected")
        return self.combine(model, expert, anti)


# ----------------------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory while the block runs: CUDA → ``max_memory_allocated``; CPU → process RSS sampled every
    ``interval`` seconds. ``peak_mb`` is the peak; ``extra_mb`` the peak minus the level at entry."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_mb = self.extra_mb = self.start_mb = 0.0
        self.kind = "cpu-rss"

    def __enter__(self):
        import torch

        if torch.cuda.is_available():
            self.kind = "cuda-allocated"
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = torch.cuda.memory_allocated() / 2**20
            return self
        import psutil

        proc = psutil.Process(os.getpid())
        self.start_mb = self._peak = proc.memory_info().rss / 2**20
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, proc.memory_info().rss / 2**20)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.kind == "cuda-allocated":
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            import psutil

            self.peak_mb = max(self._peak, psutil.Process(os.getpid()).memory_info().rss / 2**20)
        self.extra_mb = self.peak_mb - self.start_mb
        return False


# ----------------------------------------------------------------------------------------------------
# The main table (chapter 06)
# ----------------------------------------------------------------------------------------------------

#: The paper's rows, in its order: Table 1 (vanilla, FT-L, MEND, Ext-Sub, DINM), then Table 4's other rows
#: (SFT, DPO, Self-Reminder) and RLHF, which the paper names as a baseline (listed with Table 4).
TABLE_METHODS = ("vanilla", "ft-l", "mend", "ext-sub", "dinm", "sft", "dpo", "self-reminder", "rlhf")
#: Safety columns of the paper's table, then fluency; general-performance columns follow when measured.
SAFETY_COLUMNS = ("DS", "DG_onlyQ", "DG_otherA", "DG_otherQ", "DG_otherAQ", "DG_avg", "fluency")
COST_COLUMNS = ("train_seconds", "mean_edit_seconds", "peak_memory_mb")


def _method_options(method) -> dict:
    options = getattr(method, "options", None)
    if callable(options):
        try:
            return dict(options())
        except Exception:  # pragma: no cover - a method's options() should not break the table
            return {}
    return {}


def table_log_path(out) -> Path:
    """The resume log of the table written to ``out``: ``OUT`` with ``.log.jsonl``."""
    return Path(out).with_suffix(".log.jsonl")


def _table_run_settings(settings: dict, general_instances: int, records: Sequence[dict]) -> dict:
    """What decides a table's rows (the run hash of its log): its settings without the hardware string (a rerun
    on another machine resumes) and the method options (they are part of each row's key), plus the records'
    content."""
    from .io import settings_hash

    return {**{k: v for k, v in settings.items() if k not in ("hardware", "method_options")},
            "general_instances": general_instances, "records_sha": settings_hash(list(records))}


def _row_key(name: str, options: dict | None) -> str:
    import json

    return name if not options else f"{name} {json.dumps(options, sort_keys=True, default=str)}"


def _adopt_legacy_rows(log, out, settings: dict, method_options: dict) -> None:
    """A table written before its log existed: when its settings equal these, log its finished rows as this
    run's (once), so the rerun resumes instead of starting over."""
    if log.done() or not Path(out).is_file():
        return
    from .io import read_json

    try:
        saved = read_json(out, "results table")
    except ValueError:
        return  # not a table this code wrote: it is overwritten at the first finished method
    saved_settings = saved.get("settings", {}) if isinstance(saved, dict) else {}
    drop = ("hardware", "method_options")
    if {k: v for k, v in saved_settings.items() if k not in drop} != {k: v for k, v in settings.items() if k not in drop}:
        return
    saved_options = saved_settings.get("method_options") or {}
    for name, row in (saved.get("rows") or {}).items():
        if "error" not in row and saved_options.get(name, {}) == method_options.get(name, {}):
            log.append({"method": name, "row": row}, key=_row_key(name, method_options.get(name, {})))


def run_main_table(model, tokenizer, records: Sequence[dict], judge, *, train_records: Sequence[dict] | None = None,
                   methods: Sequence = TABLE_METHODS, method_options: dict | None = None,
                   general: Callable | None = None, general_instances: int = 1, max_new_tokens: int = 64,
                   max_input_tokens: int | None = 1024, batch_size: int = 16, out: str | os.PathLike | None = None, resume: bool = True,
                   progress: bool = True, settings: dict | None = None, also_judge=None,
                   allow_judge_overlap: bool = False) -> dict:
    """Evaluate every method of ``methods`` (names for :func:`helpers.harness.get_method`, with keyword
    options from ``method_options[name]``, or :class:`~helpers.harness.Method` instances) and collect the
    paper's main table.

    Each row holds the aggregate metrics, ``train_seconds`` (a global method's ``prepare``),
    ``mean_edit_seconds`` (a per-instance editor; its ``prepare``, e.g. MEND's editor training, is counted
    in ``train_seconds``), ``peak_memory_mb`` (:class:`PeakMemory` around the whole evaluation), the method's
    options and the per-instance responses and labels. A method that cannot be built (its module is missing)
    becomes a row with ``"error"`` and the table goes on. With ``out`` the table is written after every
    method, and every finished row is appended to the :class:`helpers.io.RunLog` next to it
    (:func:`table_log_path`), keyed by the method and its options under a hash of the table's settings
    (records, judges, token limits, general metrics, training data, seed, model, scale); with ``resume``,
    rows already logged for the same settings are not run again (a table written before the log existed is
    adopted when its settings are the same). The base model's weights are checked after every method: a
    method that changed them raises ``RuntimeError``.
    ``also_judge``: a second judge; each row keeps ``by_judge`` (DS/DG by each judge) and ``judge_info``.
    """
    from .harness import evaluate_safeedit, get_method
    from .io import atomic_write_json
    from .models import parameter_checksum
    from .results import hardware

    method_options = method_options or {}
    records = list(records)
    settings = {"n_records": len(records), "record_ids": [r["id"] for r in records],
                "judge": judge if isinstance(judge, str) else getattr(judge, "name", type(judge).__name__),
                "second_judge": also_judge if isinstance(also_judge, str) or also_judge is None
                else getattr(also_judge, "name", type(also_judge).__name__),
                "max_new_tokens": max_new_tokens, "max_input_tokens": max_input_tokens,
                "n_train_records": len(train_records or []), "scale": get_scale(), "hardware": hardware(),
                **(settings or {})}
    table = {"settings": settings, "rows": {}}
    log = None
    if out is not None:
        from .io import RunLog

        log = RunLog.open(table_log_path(out), _table_run_settings(settings, general_instances, records))
        if resume:
            _adopt_legacy_rows(log, out, settings, method_options)
            for key, logged in log.done().items():  # rows of this run, with the options asked for now
                if key == _row_key(logged["method"], method_options.get(logged["method"], {})):
                    table["rows"][logged["method"]] = logged["row"]
    base_checksum = parameter_checksum(model)
    for entry in methods:
        name = entry if isinstance(entry, str) else entry.name
        if name in table["rows"]:
            if progress:
                print(f"{name}: already in {log.path if log else out}, skipped")
            continue
        try:
            method = get_method(name, **method_options.get(name, {})) if isinstance(entry, str) else entry
        except ValueError as err:
            print(f"{name}: not available — {err}")
            table["rows"][name] = {"method": name, "error": str(err)}
            continue
        if progress:
            print(f"{name}: running", flush=True)
        with PeakMemory() as memory:
            result = evaluate_safeedit(method, records, judge, model, tokenizer, train_records=train_records,
                                       max_new_tokens=max_new_tokens, batch_size=batch_size, general=general,
                                       max_input_tokens=max_input_tokens, also_judge=also_judge,
                                       allow_judge_overlap=allow_judge_overlap,
                                       general_instances=general_instances, progress=progress)
        if parameter_checksum(model) != base_checksum:
            raise RuntimeError(f"{name} changed the base model's weights; every method must train a copy")
        timings = result["timings"]
        table["rows"][name] = {
            "method": name,
            "aggregate": result["aggregate"],
            "by_judge": result["by_judge"],
            "judges_info": result["judges_info"],
            "train_seconds": timings.get("prepare_seconds", 0.0),
            "mean_edit_seconds": timings.get("mean_edit_seconds"),
            "generation_seconds": timings.get("generation_seconds"),
            "peak_memory_mb": memory.peak_mb,
            "extra_memory_mb": memory.extra_mb,
            "memory_kind": memory.kind,
            "options": _method_options(method),
            "history": {k: v for k, v in getattr(method, "history", {}).items() if k != "log"},
            "instances": result["instances"],
        }
        del method
        if log is not None:
            log.append({"method": name, "row": table["rows"][name]},
                       key=_row_key(name, method_options.get(name, {}) if isinstance(entry, str) else {}))
        if out is not None:
            atomic_write_json(out, table)
    if out is not None:
        atomic_write_json(out, table)
    return table


def table_columns(table: dict) -> list[str]:
    """Safety columns, then whatever general-performance metrics were measured (e.g. KQA, Csum)."""
    extra: list[str] = []
    for row in table["rows"].values():
        for key in row.get("aggregate", {}):
            if key not in SAFETY_COLUMNS and key not in extra:
                extra.append(key)
    second = second_judge_name(table)
    judged = [f"DS ({second})", f"DG_avg ({second})"] if second else []
    return list(SAFETY_COLUMNS) + judged + extra


def second_judge_name(table: dict) -> str | None:
    """The name of the table's second judge, when its rows were judged twice."""
    first = table.get("settings", {}).get("judge")
    for row in table["rows"].values():
        for name in row.get("by_judge", {}):
            if name != first:
                return name
    return None


def row_value(row: dict, column: str):
    """A cell: an aggregate metric, or ``"DS (keyword)"`` — that metric by the named second judge."""
    if column.endswith(")") and " (" in column:
        metric, judge = column[:-1].split(" (", 1)
        return row.get("by_judge", {}).get(judge, {}).get(metric)
    return row.get("aggregate", {}).get(column)


def table_frame(table: dict):
    """The table as a pandas DataFrame (one row per method, paper order; missing methods as NaN rows)."""
    import pandas as pd

    columns = table_columns(table)
    rows = []
    for name, row in table["rows"].items():
        rows.append({"method": name, **{c: row_value(row, c) for c in columns},
                     **{c: row.get(c) for c in COST_COLUMNS}, "error": row.get("error")})
    frame = pd.DataFrame(rows).set_index("method")
    order = [m for m in TABLE_METHODS if m in frame.index] + [m for m in frame.index if m not in TABLE_METHODS]
    return frame.loc[order]


def table_markdown(table: dict, digits: int = 1) -> str:
    """A markdown rendering: the metric columns, time and peak memory; unavailable methods say why."""
    columns = table_columns(table)
    head = ["method"] + columns + ["train s", "edit s/record", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    frame = table_frame(table)
    for name, row in frame.iterrows():
        if isinstance(row["error"], str):
            lines.append("| " + " | ".join([name] + ["n/a"] * (len(head) - 1)) + " |")
            notes.append(f"* {name}: not available — {row['error']}")
            continue

        def fmt(value, d=digits):
            return "–" if value is None or value != value else f"{value:.{d}f}"

        cells = [name] + [fmt(row[c], 2 if c == "fluency" else digits) for c in columns]
        cells += [fmt(row["train_seconds"], 0), fmt(row["mean_edit_seconds"], 1), fmt(row["peak_memory_mb"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    s = table["settings"]
    lines.append("")
    kinds = {row.get("memory_kind") for row in table["rows"].values() if row.get("memory_kind")}
    memory = ("peak MB: the process's peak resident memory while the method trained and was evaluated "
              "(model, judge and Python included)" if kinds == {"cpu-rss"} else
              "peak MB: torch.cuda.max_memory_allocated during the method" if kinds == {"cuda-allocated"} else "")
    second = second_judge_name(table)
    judges = f"judge `{s['judge']}`" + (f" (and `{second}` in the columns marked so)" if second else "")
    lines.append(f"{s['n_records']} test records, {judges}, {s['max_new_tokens']} new tokens, "
                 f"{s['n_train_records']} training records, scale {s['scale']}, {s['hardware']}. {memory}")
    from .paper_tables import judge_disagreements

    notes += [f"* {line}" for line in judge_disagreements(table)]
    return "\n".join(lines + notes) + "\n"


# ----------------------------------------------------------------------------------------------------
# CLI: python -m helpers safeedit-table
# ----------------------------------------------------------------------------------------------------


def add_arguments_safeedit_table(parser) -> None:
    parser.add_argument("--data", default="sample", help="test records: 'sample', 'built', 'official' or a file")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N test records")
    parser.add_argument("--train-data", default="three,built",
                        help="comma-separated training sources: three, built (train split), a file (default: three,built)")
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training records")
    parser.add_argument("--methods", default=",".join(TABLE_METHODS))
    parser.add_argument("--model", default=None)
    add_judge_arguments(parser)
    parser.add_argument("--general", default="", help="comma-separated general metrics, e.g. kqa,csum")
    parser.add_argument("--general-limit", default=None,
                        help="items per general metric, e.g. kqa=12,csum=4 (default: the scale's limits)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="answer budget (default: 64 in small mode; the reference's 600 in full mode)")
    parser.add_argument("--max-input-tokens", type=int, default=1024,
                        help="evaluation inputs longer than this keep their last tokens (default 1024)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method-options", default="{}",
                        help='JSON: method → keyword options, e.g. \'{"sft": {"epochs": 3}, "mend": {"steps": 40}}\'')
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--no-isolate", action="store_true",
                        help="run every method in this process (default: one fresh process per method, so that each "
                             "method's peak memory is its own and not the high-water mark of the methods before it)")
    parser.add_argument("--out", default="results/safeedit_table.json",
                        help="JSON output; the markdown table goes next to it (.md)")


def _child_argv(args, method: str) -> list[str]:
    """The command line of one ``--no-isolate`` child process running ``method`` (resuming into ``--out``)."""
    argv = ["safeedit-table", "--methods", method, "--no-isolate", "--out", str(args.out)]
    for flag, value in (("--data", args.data), ("--split", args.split), ("--limit", args.limit),
                        ("--train-data", args.train_data), ("--train-limit", args.train_limit),
                        ("--model", args.model), ("--judge", args.judge), ("--second-judge", args.second_judge),
                        ("--general", args.general),
                        ("--general-limit", args.general_limit), ("--max-new-tokens", args.max_new_tokens),
                        ("--max-input-tokens", args.max_input_tokens), ("--batch-size", args.batch_size),
                        ("--seed", args.seed), ("--method-options", args.method_options)):
        if value is not None and value != "":
            argv += [flag, str(value)]
    if args.allow_judge_overlap:
        argv.append("--allow-judge-overlap")
    return argv


def _check_table_args(args, methods: list[str]):
    """Every argument of ``safeedit-table``, checked before any model loads and before anything is written:
    ``(records, train_records, judge, second_judge, general, method_options)``."""
    import json

    from .cli import at_least, check_model_name, check_output_file, require_records
    from .data import load_safeedit
    from .harness import METHODS, general_from_spec, get_method, judges_from_args, parse_general_limit

    at_least(args, 1, "limit", "train_limit", "batch_size", "max_new_tokens", "max_input_tokens")
    if not methods:
        raise SystemExit(f"--methods {args.methods!r}: no method named; choose from {', '.join(TABLE_METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods {','.join(unknown)}: unknown method; choose from {', '.join(sorted(METHODS))}")
    general = general_from_spec(args.general, parse_general_limit(args.general_limit))
    try:
        method_options = json.loads(args.method_options)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--method-options is not valid JSON: {err}") from err
    if not isinstance(method_options, dict) or not all(isinstance(v, dict) for v in method_options.values()):
        raise SystemExit("--method-options must be a JSON object of objects: {\"method\": {\"option\": value}}")
    unknown = [m for m in method_options if m not in METHODS]
    if unknown:
        raise SystemExit(f"--method-options names {', '.join(map(repr, unknown))}: unknown method; choose from "
                         f"{', '.join(sorted(METHODS))}")
    for name in methods:  # constructing a method is cheap and checks its options
        try:
            get_method(name, **method_options.get(name, {}))
        except TypeError as err:
            raise SystemExit(f"--method-options for method {name!r}: {err}") from err
        except ValueError:
            pass  # a method whose module is missing becomes a row that says so
    check_output_file(args.out)
    check_model_name(args.model)
    records = require_records(load_safeedit(args.data, split=args.split, limit=args.limit), args.data)
    train_records = require_records(load_train_records(args.train_data, limit=args.train_limit), args.train_data,
                                    "training records (--train-data)")
    judge, second_judge = judges_from_args(args, records, source=str(args.data))
    return records, train_records, judge, second_judge, general, method_options


def main_safeedit_table(args) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.no_isolate and len(methods) > 1:
        _check_table_args(args, methods)  # refuse bad input here, not in the first child
        import subprocess
        import sys

        if args.no_resume:  # start over: the children resume from nothing
            for path in (Path(args.out), table_log_path(args.out)):
                if path.exists():
                    path.unlink()
        for method in methods:
            print(f"=== {method} (own process)", flush=True)
            code = subprocess.call([sys.executable, "-m", "helpers", *_child_argv(args, method)])
            if code != 0:
                print(f"{method}: the child process failed with exit code {code}; rerun to resume", file=sys.stderr)
                return code
        return _write_markdown(args.out)
    return _run_table(args, methods)


def _write_markdown(out) -> int:
    import json

    from .io import atomic_write_text

    table = json.loads(Path(out).read_text())
    from .paper_tables import paper_tables_markdown

    md_path = Path(out).with_suffix(".md")
    text = table_markdown(table) + "\n" + paper_tables_markdown(table)
    atomic_write_text(md_path, text)
    print(text)
    print(f"wrote {out} and {md_path}")
    return 0


def _run_table(args, methods) -> int:
    from .harness import default_max_new_tokens
    from .models import load_model

    set_seed(args.seed)
    records, train_records, judge, second_judge, general, method_options = _check_table_args(args, methods)
    if args.max_new_tokens is None:
        args.max_new_tokens = default_max_new_tokens()
    model, tokenizer = load_model(args.model)
    table = run_main_table(model, tokenizer, records, judge, train_records=train_records, methods=methods,
                           method_options=method_options, general=general, max_new_tokens=args.max_new_tokens,
                           max_input_tokens=args.max_input_tokens, batch_size=args.batch_size,
                           out=args.out, resume=not args.no_resume, also_judge=second_judge,
                           allow_judge_overlap=args.allow_judge_overlap,
                           settings={"data": args.data, "split": args.split, "train_data": args.train_data,
                                     "seed": args.seed,
                                     "method_options": method_options, "train_limit": args.train_limit,
                                     "general_limit": args.general_limit,
                                     "model": args.model or "smollm2-135m-instruct", "general": args.general})
    return _write_markdown(args.out)
