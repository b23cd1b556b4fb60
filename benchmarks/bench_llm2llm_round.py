"""One LLM2LLM training round on a classification task, in float32 and in the default precision, in one run.

    python benchmarks/bench_llm2llm_round.py [--dataset trec] [--seed-size 12] [--test-size 100]

A round of the student's side of the loop (chapter 08's small settings by default): fine-tune the embedded
model on the seed set (``--epochs`` epochs, batch 4, the top ``--train-layers`` blocks), then label-score the
seeds (the evaluation that decides which seeds go to the teacher) and ``--test-size`` test items. The teacher is
left out: the offline stand-in costs milliseconds, a language-model teacher is a generation benchmark
(``bench_generation.py``). Runs the round with ``HELPERS_DTYPE=float32`` and with the default (``auto``: bf16
autocast on a CPU with native bf16), and prints each part's time, the ratios, the training losses' largest
relative difference and how many seed and test predictions agree.
"""
from __future__ import annotations

import argparse
import os
import time


def one_round(task, model, tokenizer, seeds, test, args) -> dict:
    from helpers.common.training import finetune

    t0 = time.perf_counter()
    student = finetune(model, [{"prompt": task.prompt(r), "response": task.target(r)} for r in seeds],
                       tokenizer=tokenizer, epochs=args.epochs, lr=args.lr, batch_size=4,
                       train_layers=args.train_layers, seed=0, progress=False)
    t1 = time.perf_counter()
    on_seeds = task.predict(student, tokenizer, seeds, progress=False)
    t2 = time.perf_counter()
    on_test = task.predict(student, tokenizer, test, progress=False)
    t3 = time.perf_counter()
    return {"train_s": t1 - t0, "seed_eval_s": t2 - t1, "test_eval_s": t3 - t2, "total_s": t3 - t0,
            "loss": student.finetune_history["loss"], "precision": student.finetune_history["precision"],
            "seeds": [p["prediction"] for p in on_seeds], "test": [p["prediction"] for p in on_test],
            "test_accuracy": sum(p["correct"] for p in on_test) / len(on_test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="trec")
    parser.add_argument("--seed-size", type=int, default=12)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--train-layers", type=int, default=4)
    args = parser.parse_args()

    import torch

    from helpers.common.models import cpu_bf16_support, load_model, precision
    from helpers.llm2llm.classification import make_task

    task = make_task(args.dataset)
    seeds = task.sample_seeds(task.load("train"), args.seed_size, 0)
    test = task.load("test")[: args.test_size]
    model, tokenizer = load_model(device="cpu", dtype=torch.float32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_bf16_support() or 'no'}; "
          f"{args.dataset}: {len(seeds)} seeds, {len(test)} test items, {args.epochs:g} epochs, top "
          f"{args.train_layers} blocks")
    saved = os.environ.get("HELPERS_DTYPE")
    rows = {}
    try:
        for setting in ("float32", "auto"):
            os.environ["HELPERS_DTYPE"] = setting
            one_round(task, model, tokenizer, seeds[:4], test[:4], argparse.Namespace(**{**vars(args), "epochs": 1}))
            rows[setting] = one_round(task, model, tokenizer, seeds, test, args)
    finally:
        if saved is None:
            os.environ.pop("HELPERS_DTYPE", None)
        else:
            os.environ["HELPERS_DTYPE"] = saved
    f, a = rows["float32"], rows["auto"]
    for part in ("train_s", "seed_eval_s", "test_eval_s", "total_s"):
        print(f"{part:12}: float32 {f[part]:6.1f} s | {a['precision']} {a[part]:6.1f} s | ratio "
              f"{f[part] / a[part]:.2f}x")
    loss_rel = max(abs(x - y) / abs(x) for x, y in zip(f["loss"], a["loss"]))
    print(f"training loss: largest relative difference {loss_rel:.1e} over {len(f['loss'])} steps; "
          f"seed predictions equal {sum(x == y for x, y in zip(f['seeds'], a['seeds']))}/{len(seeds)}, test "
          f"predictions equal {sum(x == y for x, y in zip(f['test'], a['test']))}/{len(test)}; test accuracy "
          f"{f['test_accuracy']:.3f} (float32) vs {a['test_accuracy']:.3f}")
    if precision("cpu") == "float32":
        print("(the default precision on this machine is float32: both rows ran the same way)")


if __name__ == "__main__":
    main()
