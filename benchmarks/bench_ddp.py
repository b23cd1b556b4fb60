"""Fine-tuning throughput: one process vs ``torchrun --nproc_per_node N`` (the Trainer engine, DDP), in one run.

    python benchmarks/bench_ddp.py [--procs 2] [--examples 32] [--batch-size 8] [--train-layers 4]

Trains the embedded student on the same GSM8K seed problems three ways — the plain loop in one process, the
``Trainer`` engine in one process, the ``Trainer`` under ``torchrun`` with ``--procs`` processes (gloo on CPU,
NCCL on GPUs) — and prints training examples per second (the fine-tuning call only, model loading excluded),
each ratio to the one-process loop, and whether the final losses agree. On a 2-core CPU each of two processes
gets one core, so the ratio shows the overhead of synchronising gradients, not a speed-up; on N GPUs it is
the data-parallel speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WORKER = r"""
import json, os, sys, time
import torch
from helpers.common import load_model
from helpers.common.training import finetune
from helpers.llm2llm.gsm8k import GSM8KTask, load_gsm8k

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
task = GSM8KTask()
rows = load_gsm8k("train")[: args["examples"]]
examples = [{"prompt": task.prompt(r), "response": task.target(r)} for r in rows]
model, tokenizer = load_model(device=args["device"])
start = time.perf_counter()
trained = finetune(model, examples, tokenizer=tokenizer, epochs=1, lr=1e-4, batch_size=args["batch_size"],
                   train_layers=args["train_layers"], seed=0, progress=False, engine=args["engine"], max_length=256)
seconds = time.perf_counter() - start
if os.environ.get("RANK", "0") == "0":
    print("RESULT " + json.dumps({"seconds": seconds, "loss": trained.finetune_history["loss"]}))
"""


def run(engine: str, procs: int, args, threads: int) -> dict:
    payload = json.dumps({"examples": args.examples, "batch_size": args.batch_size, "device": args.device,
                          "train_layers": args.train_layers, "engine": engine, "threads": threads})
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(WORKER)
        script = handle.name
    try:
        if procs == 1:
            cmd = [sys.executable, script, payload]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                   "--master_port", str(args.port), script, payload]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    finally:
        os.unlink(script)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"error: {engine} with {procs} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-layers", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--port", type=int, default=29561)
    args = parser.parse_args()
    if args.batch_size % args.procs:
        sys.exit(f"error: --batch-size {args.batch_size} must be a multiple of --procs {args.procs}")
    cores = os.cpu_count() or 1
    print(f"{args.examples} GSM8K examples, batch {args.batch_size}, top {args.train_layers} blocks, device "
          f"{args.device}, {cores} CPU cores")
    results = {
        "loop, 1 process": run("loop", 1, args, cores),
        "trainer, 1 process": run("trainer", 1, args, cores),
        f"trainer, {args.procs} processes": run("trainer", args.procs, args, max(1, cores // args.procs)),
    }
    base = results["loop, 1 process"]
    for name, r in results.items():
        rate = args.examples / r["seconds"]
        agree = max(abs(a - b) for a, b in zip(r["loss"], base["loss"]))
        print(f"{name:<22} {rate:6.2f} examples/s  ratio {base['seconds'] / r['seconds']:.2f}x  "
              f"losses within {agree:.1e} of the loop's")


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"total {time.time() - start:.0f} s")
