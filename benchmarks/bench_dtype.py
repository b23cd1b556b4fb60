"""float32 vs bfloat16 on this machine, for the three kinds of work the course does, in one run.

    python benchmarks/bench_dtype.py [--prompts 8] [--max-new-tokens 64] [--steps 3] [--repeats 2] [--probe-only]

First a matmul probe (float32 vs bfloat16 GFLOP/s, a few seconds), then:

* **generation**: batched greedy decoding of GSM8K prompts, tokens/s, with float32 weights and with bfloat16
  weights (the model loaded with ``dtype=torch.bfloat16``);
* **label scoring**: the classification tasks' forward pass (``score_labels`` on SST-2 test sentences), items/s,
  with bfloat16 weights and under bf16 autocast with float32 weights (what ``dtype="auto"`` uses);
* **a fine-tuning step**: forward + backward + AdamW on 8 × 256-token sequences, all weights trainable, in
  float32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (float32 master weights).

Each timing is the best of ``--repeats`` runs after a warm-up. Prints what the CPU supports (AMX /
AVX512-BF16, from its flags), each throughput and the bf16/fp32 ratio, and how far bf16's outputs are from
float32's (greedy texts equal, label agreement, relative loss difference), since a faster dtype that changes
results is a different experiment.
"""
from __future__ import annotations

import argparse
import time

import torch

from helpers.common.generation import generate
from helpers.common.models import cpu_bf16_support, load_model
from helpers.llm2llm.classification import make_task
from helpers.llm2llm.gsm8k import load_gsm8k


def best_of(repeats, fn):
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def generation(model, tokenizer, prompts, max_new_tokens, repeats):
    seconds, texts = best_of(repeats, lambda: generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                                       batch_size=len(prompts), progress=False))
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return tokens / seconds, texts


def label_scoring(model, tokenizer, task, records, repeats, autocast=False):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return task.predict(model, tokenizer, records, batch_size=16, progress=False)

    seconds, predictions = best_of(repeats, run)
    return len(records) / seconds, [p["prediction"] for p in predictions]


def training_step(model, tokenizer, steps, repeats, autocast):
    torch.manual_seed(0)
    batch = torch.randint(0, len(tokenizer), (8, 256))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    losses = []

    def run():
        for _ in range(steps):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seconds, _ = best_of(repeats, lambda: (model.load_state_dict(state), run()))
    first = losses[0]
    model.load_state_dict(state)
    return steps / seconds, first


def matmul_probe(repeats: int = 20) -> tuple[float, float]:
    """GFLOP/s of one decoder-sized matmul (1024×576 @ 576×1536) in float32 and in bfloat16: a few seconds, and
    the quickest way to see whether this CPU has native bf16 (on AVX2 alone bf16 is emulated and far slower)."""
    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    rates = []
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y
        start = time.perf_counter()
        for _ in range(repeats):
            x @ y
        rates.append(2 * 1024 * 576 * 1536 * repeats / (time.perf_counter() - start) / 1e9)
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--items", type=int, default=64, help="SST-2 test sentences for label scoring")
    parser.add_argument("--steps", type=int, default=3, help="fine-tuning steps per timing")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--probe-only", action="store_true",
                        help="only the matmul probe (seconds; the full run takes very long where bf16 is emulated)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_bf16_support() or 'no'}")
    fp32, bf16 = matmul_probe()
    print(f"matmul 1024×576 @ 576×1536: float32 {fp32:.1f} GFLOP/s, bfloat16 {bf16:.1f} GFLOP/s, ratio {bf16 / fp32:.2f}x")
    if args.probe_only:
        return
    prompts = [r["question"] for r in load_gsm8k("test", limit=args.prompts)]
    task = make_task("sst2")
    records = task.load("test")[:args.items]
    rows = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model, tokenizer = load_model(dtype=dtype)
        rows[name] = {"generation": generation(model, tokenizer, prompts, args.max_new_tokens, args.repeats),
                      "scoring": label_scoring(model, tokenizer, task, records, args.repeats)}
        del model
    model, tokenizer = load_model(dtype=torch.float32)
    rows["autocast"] = {"scoring": label_scoring(model, tokenizer, task, records, args.repeats, autocast=True)}
    model.train()
    rows["float32"]["training"] = training_step(model, tokenizer, args.steps, args.repeats, autocast=False)
    rows["bfloat16"]["training"] = training_step(model, tokenizer, args.steps, args.repeats, autocast=True)
    f, b = rows["float32"], rows["bfloat16"]
    same_texts = sum(x == y for x, y in zip(f["generation"][1], b["generation"][1]))
    same_labels = sum(x == y for x, y in zip(f["scoring"][1], b["scoring"][1]))
    loss_rel = abs(b["training"][1] - f["training"][1]) / abs(f["training"][1])
    print(f"generation ({args.prompts} prompts × {args.max_new_tokens} new tokens, one batch): "
          f"float32 {f['generation'][0]:.1f} tok/s, bf16 weights {b['generation'][0]:.1f} tok/s, "
          f"ratio {b['generation'][0] / f['generation'][0]:.2f}x; greedy texts equal {same_texts}/{args.prompts}")
    print(f"label scoring (SST-2, {len(records)} sentences): float32 {f['scoring'][0]:.1f} items/s, "
          f"bf16 weights {b['scoring'][0]:.1f} items/s, ratio {b['scoring'][0] / f['scoring'][0]:.2f}x; "
          f"labels equal {same_labels}/{len(records)}")
    a = rows["autocast"]
    print(f"label scoring under bf16 autocast (float32 weights): {a['scoring'][0]:.1f} items/s, ratio "
          f"{a['scoring'][0] / f['scoring'][0]:.2f}x; labels equal "
          f"{sum(x == y for x, y in zip(f['scoring'][1], a['scoring'][1]))}/{len(records)}")
    print(f"fine-tuning step (8 × 256 tokens, all weights, AdamW): float32 {f['training'][0]:.3f} steps/s, "
          f"bf16 autocast {b['training'][0]:.3f} steps/s, ratio {b['training'][0] / f['training'][0]:.2f}x; "
          f"first loss {f['training'][1]:.4f} vs {b['training'][1]:.4f} ({loss_rel:.1e} relative)")


if __name__ == "__main__":
    main()
