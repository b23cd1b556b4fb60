"""GSM8K evaluation throughput: an OpenAI-compatible server at concurrency 1 / 4 / 8 vs in-process batched
generation, on the same problems with the same greedy settings.

    python benchmarks/bench_backend.py [--prompts 16] [--max-new-tokens 64] [--batch-size 8] [--concurrency 1,4,8]
    python benchmarks/bench_backend.py --backend-url http://gpu-box:8000/v1 --model MODEL   # an existing server

Without ``--backend-url`` it starts ``transformers serve`` on the embedded model's converted folder on a free
local port (``--device``, ``--dtype``; ``--continuous-batching`` passes that flag on) and stops it at the end;
in-process generation then uses the same weights, device and dtype. Prints problems/s and generated tokens/s
(replies re-tokenized with the model's tokenizer, the same count for both paths), each server run's ratio to
in-process generation, and how many replies equal the in-process ones — all in one run.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from helpers.common.backend import ServerBackend
from helpers.common.generation import generate
from helpers.common.models import load_model, prepare_embedded_model
from helpers.llm2llm.gsm8k import GSM8KTask, load_gsm8k


def start_transformers_serve(folder: str, device: str, dtype: str, continuous_batching: bool):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = Path(sys.executable).parent / "transformers"
    cmd = [str(cli) if cli.exists() else "transformers", "serve", folder, "--device", device, "--dtype", dtype,
           "--host", "127.0.0.1", "--port", str(port)]
    if continuous_batching:
        cmd.append("--continuous-batching")
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"transformers serve exited: {Path(log.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(1)
    proc.kill()
    raise SystemExit("transformers serve was not ready within 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="in-process batch size")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--backend-url", default=None, help="an already running server (default: start transformers serve)")
    parser.add_argument("--model", default=None,
                        help="the model, in-process and as the server names it (default: the embedded model's folder)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--continuous-batching", action="store_true")
    args = parser.parse_args()

    import torch

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `timeout` still stops the server (finally below)
    folder = str(prepare_embedded_model(verbose=False))
    model, tokenizer = load_model(args.model,
                                  device=args.device, dtype=getattr(torch, args.dtype))
    task = GSM8KTask(max_new_tokens=args.max_new_tokens)
    prompts = [task.prompt(r) for r in load_gsm8k("test", limit=args.prompts)]

    def tokens(replies):
        return sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in replies)  # + end of turn

    def report(name, seconds, n_tokens, same):
        print(f"{name:<24}: {len(prompts) / seconds:6.3f} problems/s  {n_tokens / seconds:7.1f} tokens/s  "
              f"({seconds:6.1f} s)  x{local_s / seconds:5.2f} vs in-process  same replies {same}/{len(prompts)}",
              flush=True)

    print(f"device={args.device} dtype={args.dtype} torch_threads={torch.get_num_threads()} cpus={os.cpu_count()} "
          f"prompts={len(prompts)} max_new_tokens={args.max_new_tokens} server="
          f"{args.backend_url or 'transformers serve'}{' --continuous-batching' if args.continuous_batching else ''}",
          flush=True)
    generate(model, tokenizer, prompts[:2], max_new_tokens=4, progress=False)  # warm-up
    start = time.perf_counter()
    local = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                     progress=False)
    local_s = time.perf_counter() - start
    report(f"in-process, batch {args.batch_size}", local_s, tokens(local), len(prompts))
    del model

    proc, url = (None, args.backend_url) if args.backend_url else start_transformers_serve(
        folder, args.device, args.dtype, args.continuous_batching)
    try:
        backend = ServerBackend(args.model or folder, base_url=url, concurrency=1)
        backend.check()
        backend.generate(prompts[:1], max_new_tokens=4, progress=False)  # warm-up
        for c in [int(x) for x in args.concurrency.split(",")]:
            backend.concurrency = c
            start = time.perf_counter()
            served = backend.generate(prompts, max_new_tokens=args.max_new_tokens, progress=False)
            seconds = time.perf_counter() - start
            report(f"server, concurrency {c}", seconds, tokens(served), sum(a == b for a, b in zip(served, local)))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
