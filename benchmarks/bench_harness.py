"""SafeEdit harness throughput: records/min batched across records vs one record at a time.

    python benchmarks/bench_harness.py [--data sample] [--records 4] [--max-new-tokens 32] [--batch-size 16]
                                       [--max-input-tokens 1024] [--threads N] [--full-batches] [--cap N] [--per-input]
                                       [--no-continuous]

All runs evaluate the same records with the vanilla embedded model and the keyword judge (so the time is
generation, which dominates) and print records/min:

* **one record at a time, one padded batch** — the five inputs of a record in one batch, padded to the
  longest (a 40-token "only question" input padded to a 1,000-token jailbreak prompt): the naive loop;
* **one record at a time, length-bucketed** — what the harness now does for per-instance editors (DINM):
  the five inputs split into batches of similar length (:func:`helpers.safeedit.harness.length_buckets`);
* **batched across records** — the global-method path of ``evaluate_safeedit``: all records' inputs sorted
  by length and bucketed, at most ``--batch-size`` per batch, so decoding steps are shared by more inputs.

``--dtype`` (default on) repeats the batched run with the model loaded in bfloat16 and prints the ratio against
float32 weights, how many replies are equal and how many keyword labels, with what the CPU supports (native
bf16 from its flags: AMX / AVX512-BF16; without it bf16 is emulated and slow, so the row is skipped unless
``--dtype-anyway``). ``--per-input`` adds the simplest loop, one input at a time (batch size 1); ``--full-batches`` adds the
batched run without bucketing; ``--cap N`` adds a batched run with inputs capped
at N tokens (a different setting: the model sees less of each prompt, so it is printed separately).
``--continuous`` (default on) repeats the batched run with transformers' continuous batching
(``HELPERS_GENERATION=continuous``: ``model.generate_batch``, no padding, no length buckets, in float32) and
prints its ratio to the padded batched run and how many replies are equal.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from helpers.common.models import load_model
from helpers.safeedit.data import load_safeedit
from helpers.safeedit.harness import VanillaMethod, evaluate_safeedit
from helpers.safeedit.judge import KeywordJudge


def run(model, tokenizer, records, *, per_record: bool, **kwargs) -> tuple[float, list[dict]]:
    method, judge = VanillaMethod(), KeywordJudge()
    start = time.perf_counter()
    if per_record:
        instances = [evaluate_safeedit(method, [r], judge, model, tokenizer, progress=False, **kwargs)["instances"][0]
                     for r in records]
    else:
        instances = evaluate_safeedit(method, records, judge, model, tokenizer, progress=False, **kwargs)["instances"]
    return time.perf_counter() - start, instances


def same_replies(a: list[dict], b: list[dict]) -> str:
    same = sum(x["responses"][k] == y["responses"][k] for x, y in zip(a, b) for k in x["responses"])
    return f"{same}/{sum(len(x['responses']) for x in a)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample", help="sample, built or a SafeEdit JSON file")
    parser.add_argument("--records", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-input-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--full-batches", action="store_true", help="also run batched without length buckets")
    parser.add_argument("--cap", type=int, default=0, help="also run batched with inputs capped at N tokens")
    parser.add_argument("--per-input", action="store_true",
                        help="also run the simplest loop: one input at a time (batch size 1)")
    parser.add_argument("--dtype", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the batched harness with bf16 weights (on a CPU with native bf16)")
    parser.add_argument("--continuous", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the batched harness with continuous batching (model.generate_batch)")
    parser.add_argument("--dtype-anyway", action="store_true", help="the bf16 row even without native bf16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(dtype=torch.float32)
    records = load_safeedit(args.data, limit=args.records)
    n = len(records)
    common = dict(max_new_tokens=args.max_new_tokens, max_input_tokens=args.max_input_tokens)
    run(model, tokenizer, records[:1], per_record=False, max_new_tokens=2, max_input_tokens=64)  # warm-up
    device = next(model.parameters()).device
    print(f"device={device} threads={torch.get_num_threads()} data={args.data} records={n} (x5 inputs) "
          f"max_new_tokens={args.max_new_tokens} max_input_tokens={args.max_input_tokens}", flush=True)

    def line(label: str, seconds: float, extra: str = "") -> None:
        print(f"{label:<42}: {60 * n / seconds:7.3f} records/min ({seconds:6.1f} s){extra}", flush=True)

    naive_s, naive = run(model, tokenizer, records, per_record=True, batch_size=5, pad_budget=None, **common)
    line("one record at a time, one padded batch", naive_s)
    single_s, single = run(model, tokenizer, records, per_record=True, batch_size=5, **common)
    line("one record at a time, length-bucketed", single_s, f"  same replies as naive: {same_replies(naive, single)}")
    batched_s, batched = run(model, tokenizer, records, per_record=False, batch_size=args.batch_size, **common)
    line(f"batched across records (<= {args.batch_size}/batch)", batched_s,
         f"  same replies as naive: {same_replies(naive, batched)}")
    if args.per_input:
        single_input_s, single_input = run(model, tokenizer, records, per_record=True, batch_size=1, **common)
        line("one input at a time (batch size 1)", single_input_s,
             f"  same replies as naive: {same_replies(naive, single_input)}")
        print(f"speed-up, batched vs one input at a time             : {single_input_s / batched_s:5.2f}x")
    print(f"speed-up, batched vs one record at a time (naive)    : {naive_s / batched_s:5.2f}x")
    print(f"speed-up, batched vs one record at a time (bucketed) : {single_s / batched_s:5.2f}x")
    if args.continuous:
        os.environ["HELPERS_GENERATION"] = "continuous"
        try:
            cont_s, cont = run(model, tokenizer, records, per_record=False, batch_size=args.batch_size, **common)
        finally:
            del os.environ["HELPERS_GENERATION"]
        line("batched, continuous batching", cont_s, f"  {batched_s / cont_s:.2f}x the padded batched run; "
             f"same replies as batched: {same_replies(batched, cont)}")
        print(f"speed-up, continuous batching vs one record at a time (naive): {naive_s / cont_s:5.2f}x")
    if args.full_batches:
        full_s, _ = run(model, tokenizer, records, per_record=False, batch_size=args.batch_size, pad_budget=None, **common)
        line("batched across records, no buckets", full_s)
    if args.dtype:
        from helpers.common.models import cpu_bf16_support

        native = cpu_bf16_support()
        if native or args.dtype_anyway or device.type != "cpu":
            bf16_model, _ = load_model(dtype=torch.bfloat16)
            run(bf16_model, tokenizer, records[:1], per_record=False, max_new_tokens=2, max_input_tokens=64)
            bf16_s, bf16 = run(bf16_model, tokenizer, records, per_record=False, batch_size=args.batch_size, **common)
            labels = sum(x["labels"][k] == y["labels"][k] for x, y in zip(batched, bf16) for k in x["labels"])
            line(f"batched, bf16 weights (native bf16: {native or 'no'})", bf16_s,
                 f"  {batched_s / bf16_s:.2f}x float32 weights; same replies: {same_replies(batched, bf16)}, "
                 f"same keyword labels: {labels}/{sum(len(x['labels']) for x in batched)}")
        else:
            print("dtype axis skipped: this CPU has no native bf16 (bf16 would be emulated; --dtype-anyway runs it)")
    if args.cap:
        capped_s, _ = run(model, tokenizer, records, per_record=False, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, max_input_tokens=args.cap)
        line(f"batched, inputs capped at {args.cap} tokens", capped_s,
             f"  ({naive_s / capped_s:.2f}x the naive run; shorter inputs)")


if __name__ == "__main__":
    main()
