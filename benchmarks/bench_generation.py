"""Tokens/s of batched generation vs one prompt at a time, on the embedded model.

    python benchmarks/bench_generation.py [--prompts 16] [--batch-size 8] [--max-new-tokens 48]

Prints both throughputs and their ratio in one run. Generated tokens are counted up to each reply's
end-of-sequence token, so padding after an early stop is not counted as work done.
"""
from __future__ import annotations

import argparse
import time

import torch

from helpers.common.generation import chat_prompt
from helpers.common.models import load_model
from helpers.llm2llm.gsm8k import load_gsm8k


def run(model, tokenizer, prompts, batch_size, max_new_tokens) -> tuple[int, float]:
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    produced, start = 0, time.perf_counter()
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        for row in new:
            stop = (row == tokenizer.eos_token_id).nonzero()
            produced += int(stop[0]) + 1 if len(stop) else len(row)
    return produced, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    model, tokenizer = load_model()
    prompts = [r["question"] for r in load_gsm8k("test", limit=args.prompts)]
    run(model, tokenizer, prompts[:2], 2, 4)  # warm-up
    single_tokens, single_s = run(model, tokenizer, prompts, 1, args.max_new_tokens)
    batch_tokens, batch_s = run(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    single, batched = single_tokens / single_s, batch_tokens / batch_s
    device = next(model.parameters()).device
    print(f"device={device} threads={torch.get_num_threads()} prompts={args.prompts} max_new_tokens={args.max_new_tokens}")
    print(f"one at a time : {single:8.1f} tokens/s ({single_tokens} tokens in {single_s:.1f} s)")
    print(f"batch size {args.batch_size:<3}: {batched:8.1f} tokens/s ({batch_tokens} tokens in {batch_s:.1f} s)")
    print(f"speed-up      : {batched / single:8.2f}x")


if __name__ == "__main__":
    main()
