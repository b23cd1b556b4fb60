"""RLHF, the SafeEdit paper's reinforcement-learning baseline (chapter 05), with TRL's ``RLOOTrainer``.

REINFORCE leave-one-out: reward = 1 − the safety judge's probability of *unsafe*, minus β·KL(policy ‖ reference)
per sequence. TRL 1.16 ships GRPO and RLOO but no longer PPO; RLOO is the one whose KL penalty goes into the
reward, as in classic RLHF, and it needs no value model (a second copy of the network), which keeps it CPU-sized.
LoRA by default, so the reference is the base model itself (adapters disabled). The training data and the shared
training arguments are those of :mod:`helpers.detox.trained`.
"""
from __future__ import annotations

import copy
import tempfile
from typing import Callable, Sequence

from .trained import _conversational, _lora_config, _quiet, _record_log, _TrainedMethod, _training_args


def _completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


class RLHFMethod(_TrainedMethod):
    """RLHF with TRL's ``RLOOTrainer``: reward = 1 − P(unsafe) from the safety judge, KL penalty β to the base.

    ``judge``: a :class:`helpers.safeedit.judge.Judge` or a judge name (default: the best offline judge, ``probe``
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

    def check_checkpoint_options(self, options: dict):
        """No checkpoint resume here: the sampled completions and rewards (``self.samples``, what the chapter
        shows) live in this process, so a resumed run would report only the steps after the checkpoint."""
        if "checkpoint_dir" in options or "save_steps" in options:
            raise ValueError("rlhf: checkpoint resume (checkpoint_dir, save_steps) is not supported; SFT and DPO "
                             "have it")

    def global_batch(self) -> tuple[str, int]:
        return "num_generations × prompts_per_step", self.settings["num_generations"] * self.settings["prompts_per_step"]

    def _judge(self):
        from ..safeedit.judge import get_judge
        from .evaluate import default_judge_name

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
            trainer = _quiet(RLOOTrainer(model=policy, reward_funcs=self.reward_function(), args=args,
                                         train_dataset=dataset, processing_class=tok,
                                         peft_config=_lora_config(s["lora_r"], 2 * s["lora_r"]) if s["lora"] else None),
                             self.progress)
            if not s["lora"] and s["beta"] != 0.0:
                # TRL would reload the reference from disk by name; use an exact frozen copy of the base instead.
                ref = copy.deepcopy(model).eval()
                from trl.trainer.utils import add_fused_lm_head

                add_fused_lm_head(ref, temperature=trainer.temperature)
                trainer.ref_model = ref
            trainer.train()
        _record_log(self.history, trainer)
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
