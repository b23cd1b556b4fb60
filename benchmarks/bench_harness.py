"""SafeEdit harness throughput: records/min batched across records vs one record at a time.

    python benchmarks/bench_harness.py [--data sample] [--records 4] [--max-new-tokens 32] [--batch-size 16]
                                       [--max-input-tokens 1024] [--cap 256]

Both runs evaluate the same records with the vanilla embedded model and the keyword judge (so the number is
about generation, which dominates). *One record at a time* is how a per-instance editor must run: the five
inputs of a record form one batch, padded to the longest (a short "only question" input padded to a
1,000-token jailbreak prompt). *Batched* is the global-method path of ``evaluate_safeedit``: the inputs of
all records are sorted by length and generated ``--batch-size`` at a time, so a batch holds inputs of similar
length and the decoder steps are shared by more sequences. With ``--cap N`` a third run also caps inputs at
N tokens (a different setting: it changes what the model sees, so it is printed separately).
"""
from __future__ import annotations

import argparse
import time

import torch

from helpers.data import load_safeedit
from helpers.harness import VanillaMethod, evaluate_safeedit
from helpers.judge import KeywordJudge
from helpers.models import load_model


def run(model, tokenizer, records, *, per_record: bool, batch_size: int, max_new_tokens: int,
        max_input_tokens: int | None) -> tuple[float, list[dict]]:
    method, judge = VanillaMethod(), KeywordJudge()
    kwargs = dict(max_new_tokens=max_new_tokens, max_input_tokens=max_input_tokens, progress=False)
    start = time.perf_counter()
    if per_record:
        instances = [evaluate_safeedit(method, [r], judge, model, tokenizer, batch_size=5, **kwargs)["instances"][0]
                     for r in records]
    else:
        instances = evaluate_safeedit(method, records, judge, model, tokenizer, batch_size=batch_size, **kwargs)["instances"]
    return time.perf_counter() - start, instances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample", help="sample, built or a SafeEdit JSON file")
    parser.add_argument("--records", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-input-tokens", type=int, default=1024)
    parser.add_argument("--cap", type=int, default=0, help="also run batched with inputs capped at N tokens")
    args = parser.parse_args()
    model, tokenizer = load_model()
    records = load_safeedit(args.data, limit=args.records)
    run(model, tokenizer, records[:1], per_record=False, batch_size=5, max_new_tokens=2,
        max_input_tokens=args.max_input_tokens)  # warm-up
    opts = dict(max_new_tokens=args.max_new_tokens, max_input_tokens=args.max_input_tokens)
    single_s, single = run(model, tokenizer, records, per_record=True, batch_size=5, **opts)
    batched_s, batched = run(model, tokenizer, records, per_record=False, batch_size=args.batch_size, **opts)
    same = sum(a["responses"][k] == b["responses"][k] for a, b in zip(single, batched) for k in a["responses"])
    n = len(records)
    device = next(model.parameters()).device
    print(f"device={device} threads={torch.get_num_threads()} data={args.data} records={n} (x5 inputs) "
          f"max_new_tokens={args.max_new_tokens} max_input_tokens={args.max_input_tokens}")
    print(f"one record at a time   : {60 * n / single_s:7.2f} records/min ({single_s:.1f} s)")
    print(f"batched across records : {60 * n / batched_s:7.2f} records/min ({batched_s:.1f} s, batch size {args.batch_size})")
    print(f"speed-up               : {single_s / batched_s:7.2f}x   (identical replies: {same}/{5 * n})")
    if args.cap:
        capped_s, _ = run(model, tokenizer, records, per_record=False, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, max_input_tokens=args.cap)
        print(f"batched, inputs <= {args.cap:<4}: {60 * n / capped_s:7.2f} records/min ({capped_s:.1f} s; "
              f"{single_s / capped_s:.2f}x the one-at-a-time run, but the model sees shorter inputs)")


if __name__ == "__main__":
    main()
