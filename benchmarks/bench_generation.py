"""Tokens/s of batched generation vs one prompt at a time, on the embedded model.

    python benchmarks/bench_generation.py [--prompts 16] [--batch-size 8] [--max-new-tokens 48] [--no-dtype]
                                          [--no-engines]

Prints both throughputs and their ratio in one run, then (``--dtype``, the default) batched generation with
bfloat16 weights against float32 weights, the ratio and how many greedy replies are equal, with what the
CPU supports (native bf16 from its flags: AMX / AVX512-BF16). Generated tokens are counted up to each reply's
end-of-sequence token, so padding after an early stop is not counted as work done. ``--engines`` (the default)
last: the course's ``generate`` with transformers' continuous batching (``engine="continuous"``,
``model.generate_batch``) against padded ``model.generate`` batches (``engine="generate"``), in float32, with the
ratio and how many greedy replies are equal (tokens counted by re-tokenizing the replies, the same for both).
"""
from __future__ import annotations

import argparse
import time

import torch

from helpers.common.generation import chat_prompt, generate
from helpers.common.models import cpu_bf16_support, load_model
from helpers.llm2llm.gsm8k import load_gsm8k


def run(model, tokenizer, prompts, batch_size, max_new_tokens, replies=None) -> tuple[int, float]:
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
            if replies is not None:
                replies.append(row[: int(stop[0]) + 1 if len(stop) else len(row)].tolist())
    return produced, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--dtype", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare batched generation with bfloat16 and float32 weights")
    parser.add_argument("--engines", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare continuous batching (generate_batch) with padded model.generate batches")
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
    if args.dtype:
        fp32_replies = []
        fp32_tokens, fp32_s = run(model, tokenizer, prompts, args.batch_size, args.max_new_tokens, fp32_replies)
        del model
        model, tokenizer = load_model(dtype=torch.bfloat16)
        run(model, tokenizer, prompts[:2], 2, 4)  # warm-up
        bf16_replies = []
        bf16_tokens, bf16_s = run(model, tokenizer, prompts, args.batch_size, args.max_new_tokens, bf16_replies)
        fp32, bf16 = fp32_tokens / fp32_s, bf16_tokens / bf16_s
        same = sum(a == b for a, b in zip(fp32_replies, bf16_replies))
        print(f"dtype (batch size {args.batch_size}; native bf16 on this CPU: {cpu_bf16_support() or 'no'}): float32 "
              f"weights {fp32:.1f} tokens/s, bfloat16 weights {bf16:.1f} tokens/s, ratio {bf16 / fp32:.2f}x; "
              f"greedy replies equal {same}/{len(prompts)}")
    if args.engines:
        model, tokenizer = load_model(dtype=torch.float32)
        timed = {}
        for engine in ("generate", "continuous", "generate", "continuous"):  # A B A B: the best of two each
            start = time.perf_counter()
            replies = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                               batch_size=args.batch_size, progress=False, engine=engine)
            seconds = time.perf_counter() - start
            if engine not in timed or seconds < timed[engine][1]:
                timed[engine] = (replies, seconds)
        (padded, padded_s), (cont, cont_s) = timed["generate"], timed["continuous"]
        tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in padded)
        same = sum(a == b for a, b in zip(padded, cont))
        print(f"engine (float32, batch size {args.batch_size}, best of 2): model.generate {tokens / padded_s:.1f} "
              f"tokens/s ({padded_s:.1f} s), continuous batching {tokens / cont_s:.1f} tokens/s ({cont_s:.1f} s), "
              f"ratio {padded_s / cont_s:.2f}x; greedy replies equal {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
