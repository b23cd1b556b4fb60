"""``python -m helpers llm2llm``: the LLM2LLM loop from the command line (chapters 07–08)::

    python -m helpers llm2llm --dataset gsm8k --seed-size 74 --iterations 3 --test-size 200 --out runs/gsm8k
    python -m helpers llm2llm --dataset trec --seed-size 24 --iterations 2 --out runs/trec
    # the reference's full-scale training settings (a GPU and a 7B student; see REFERENCE)
    python -m helpers llm2llm --dataset gsm8k --preset reference --student meta-llama/Llama-2-7b-hf \
        --seed-size 74 --iterations 5 --out runs/gsm8k_reference
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..common.distributed import is_main_process
from .loop import check_backend_task, run_llm2llm
from .task import get_task

#: The LLM2LLM reference's GSM8K training (SqueezeAILab/LLM2LLM): full fine-tuning, 3 epochs, lr 2e-5 with a
#: cosine schedule and 3 % warm-up, effective batch 128, sequences up to 1,024 tokens, one teacher example per
#: wrong seed, and its duplicate filter (ROUGE-L on the question alone, 0.95). ``--preset reference`` sets these
#: where the command line does not (batch 8 × 16 accumulated steps = 128).
REFERENCE = {"epochs": 3.0, "lr": 2e-5, "lr_schedule": "cosine", "warmup_ratio": 0.03, "batch_size": 8,
             "grad_accum": 16, "max_length": 1024, "per_wrong": 1, "dedup_threshold": 0.95, "dedup_on": "question"}


def apply_preset(args: argparse.Namespace) -> None:
    """Fill in ``--preset reference`` for every flag of :data:`REFERENCE` not given on the command line; with
    ``--batch-size B`` alone, ``--grad-accum`` becomes 128 / B so the effective batch stays 128."""
    if getattr(args, "preset", None) != "reference":
        return
    typed = getattr(args, "argv", None) or []
    given = {a.split("=")[0][2:].replace("-", "_") for a in typed if a.startswith("--")}
    if args.lora or args.train_layers is not None:
        raise ValueError("--preset reference is full fine-tuning: drop --lora / --train-layers")
    for key, value in REFERENCE.items():
        if key not in given and (key != "dedup_on" or args.dataset == "gsm8k"):
            setattr(args, key, value)
    if "batch_size" in given and "grad_accum" not in given:
        args.grad_accum = max(1, 128 // args.batch_size)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def add_arguments_llm2llm(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="task name: gsm8k (chapter 07), sst2, trec, snips, casehold (chapter 08)")
    parser.add_argument("--seed-size", type=int, required=True, help="number of seed training examples (1%% of GSM8K train = 74)")
    parser.add_argument("--iterations", type=int, required=True, help="augmentation rounds K (K+1 students; iteration 0 = seed only)")
    parser.add_argument("--test-size", type=int, default=None, help="evaluate on the first M test problems (default: all)")
    parser.add_argument("--teacher", default=None,
                        help="teacher: programmatic-gsm8k (default for gsm8k, offline), embedded, a local model folder, "
                             "a hub id, or openai:MODEL (HELPERS_TEACHER_BASE_URL / HELPERS_TEACHER_API_KEY)")
    parser.add_argument("--out", required=True, help="run folder (created; a rerun resumes it)")
    parser.add_argument("--per-wrong", type=int, default=1, help="teacher replies per wrongly answered seed example")
    parser.add_argument("--student", default=None, help="student model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=8, help="training batch size")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (effective batch = "
                                                                  "batch size × this)")
    parser.add_argument("--lr-schedule", choices=("linear", "cosine"), default="linear",
                        help="decay after the warm-up (the reference: cosine)")
    parser.add_argument("--warmup-ratio", type=float, default=0.03, help="share of the updates spent warming up")
    parser.add_argument("--preset", choices=("reference",), default=None,
                        help="reference: the LLM2LLM reference's GSM8K training settings (3 epochs, lr 2e-5, cosine, "
                             "3%% warm-up, effective batch 128, max length 1024, full fine-tuning) where not given")
    parser.add_argument("--dedup-threshold", type=float, default=0.95,
                        help="ROUGE-L at which a new example counts as a near-copy")
    parser.add_argument("--dedup-on", choices=("question+solution", "question"), default=None,
                        help="gsm8k: what the near-copy filter compares (default question+solution; the reference "
                             "and --preset reference: question)")
    parser.add_argument("--max-length", type=int, default=512, help="training sequence length (tokens)")
    parser.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tuning")
    parser.add_argument("--train-layers", type=int, default=None, help="train only the last N blocks (CPU speed knob)")
    parser.add_argument("--continue-training", action="store_true", help="continue from the previous student instead of retraining from the base model")
    parser.add_argument("--evaluate-on", choices=("train", "seed"), default="train",
                        help="find mistakes on the whole training data (paper) or on the seeds only (cheaper)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="student generation length (gsm8k default 256)")
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--teacher-temperature", type=float, default=0.7)
    parser.add_argument("--teacher-max-new-tokens", type=int, default=None,
                        help="longest teacher reply in tokens (default: the task's, 128 for one classification "
                             "example, 512 for CaseHOLD and GSM8K); replies also stop at the task's stop strings")
    parser.add_argument("--zero-shot", action="store_true", help="also evaluate the untrained student")
    parser.add_argument("--save-steps", type=int, default=None,
                        help="save a fine-tuning checkpoint every N updates in OUT/checkpoints and resume an "
                             "interrupted fine-tuning from it (the Trainer engine)")
    parser.add_argument("--save-model", action="store_true", help="keep the newest student in OUT/student_NN (for gsm8k-eval --model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-progress", action="store_true")
    from ..common.backend import add_backend_arguments

    add_backend_arguments(parser, help="gsm8k: generate the students' predictions through an OpenAI-compatible "
                                       "server that loads models by path (transformers serve started without a "
                                       "model); each student is requested by its saved folder, so MODEL is only a "
                                       "label (e.g. openai:students)")


def main_llm2llm(args: argparse.Namespace) -> int:
    from ..common.backend import backend_from_args, parse_backend
    from ..common.checks import above, at_least, check_model_name, check_output_folder

    # every argument is checked before any model loads and before anything is written (run_llm2llm checks the
    # run folder's settings, the teacher, the data and the seed size the same way)
    apply_preset(args)
    at_least(args, 1, "seed_size", "test_size", "per_wrong", "batch_size", "max_length", "max_new_tokens",
             "eval_batch_size", "train_layers", "teacher_max_new_tokens", "grad_accum", "save_steps")
    if not 0 <= args.warmup_ratio < 1 or not 0 < args.dedup_threshold <= 1:
        raise ValueError(f"--warmup-ratio must be in [0, 1) and --dedup-threshold in (0, 1]; got {args.warmup_ratio}, "
                         f"{args.dedup_threshold}")
    at_least(args, 0, "iterations", "lr", "teacher_temperature")
    above(args, 0, "epochs")
    check_output_folder(args.out)
    check_model_name(args.student, "--student")
    task = get_task(args.dataset)
    if parse_backend(args.backend) is not None:
        check_backend_task(task, args.lora)
    backend = backend_from_args(args)  # flags checked and the server reached before anything trains
    if args.dedup_on is not None:
        if not hasattr(task, "dedup_on"):
            raise SystemExit(f"--dedup-on does not apply to {args.dataset} (it compares text and label)")
        task.dedup_on = args.dedup_on
    if args.max_new_tokens is not None:
        if not hasattr(task, "max_new_tokens"):
            raise SystemExit(f"--max-new-tokens does not apply to {args.dataset}")
        task.max_new_tokens = args.max_new_tokens
    summary = run_llm2llm(
        task, args.teacher, seed_size=args.seed_size, iterations=args.iterations, out_dir=args.out,
        per_wrong=args.per_wrong, test_size=args.test_size, student_name=args.student, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr_schedule=args.lr_schedule,
        warmup_ratio=args.warmup_ratio, dedup_threshold=args.dedup_threshold, max_length=args.max_length,
        lora=args.lora, train_layers=args.train_layers,
        continue_training=args.continue_training, evaluate_on=args.evaluate_on,
        teacher_temperature=args.teacher_temperature, teacher_max_new_tokens=args.teacher_max_new_tokens,
        eval_batch_size=args.eval_batch_size, seed=args.seed,
        device=args.device, zero_shot=args.zero_shot, save_model=args.save_model, progress=not args.no_progress,
        backend=backend, save_steps=args.save_steps)
    if is_main_process():  # under torchrun every rank ran; rank 0 wrote --out and reports
        print(format_summary(summary))
        print(f"written: {Path(args.out) / 'summary.json'}")
    return 0


def format_summary(summary: dict) -> str:
    """A small text table of a run's iterations."""
    lines = [f"{summary['task']} · teacher {summary['teacher']} · student {summary['config']['student']}",
             "iteration  train_size  wrong  new_examples  teacher_accepted  test_accuracy"]
    for e in summary["iterations"]:
        accepted = (f"{e['teacher_replies_accepted']}/{e['teacher_requests']}"
                    if e.get("teacher_replies_accepted") is not None else None)
        lines.append(f"{e['iteration']:>9}  {e['train_size']:>10}  {_dash(e['wrong']):>5}  "
                     f"{_dash(e['new_examples']):>12}  {_dash(accepted):>16}  {e['test_accuracy']:>13.3f}")
    if "zero_shot_test_accuracy" in summary:
        lines.append(f"zero-shot test accuracy: {summary['zero_shot_test_accuracy']:.3f}")
    return "\n".join(lines)


def _dash(value) -> str:
    return "-" if value is None else str(value)
