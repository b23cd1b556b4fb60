"""Benchmark DINM's fast path against a straightforward full-forward implementation, in one run.

For one SafeEdit record and one or more layers (default: the middle layer), both paths run the same edit
(same inputs, steps, learning rate, KL weight, KL with gradient). The script prints, per layer,

* the per-edit time of each path (setup + all steps), as wall time and as the CPU time of the process —
  on a shared machine the CPU time is the steadier measure of the work;
* the speed-up full / fast;
* whether the two loss trajectories agree within ``--rtol`` (exit status 1 if not, or if the speed-up at
  the first layer is below ``--require-speedup``);

and, with ``--memory`` (default on), the peak memory of one edit on CPU: each path runs once more in a
fresh subprocess that loads the model, runs one no-grad forward pass (so every weight is paged in),
resets the Linux high-water mark (``/proc/self/clear_refs``) and reports the peak resident set during the
edit (``VmHWM``), in total and on top of the loaded model.

    python benchmarks/bench_dinm.py                                   # embedded model, sample record 0
    python benchmarks/bench_dinm.py --layers 8,15,22,28 --out results/dinm_benchmark.json
    python benchmarks/bench_dinm.py --device cuda --max-prompt-tokens 1024   # on a GPU (no memory probe)

The fast/full comparison runs in float32 (``HELPERS_DTYPE=float32``). With ``--precision`` (default on, when
the CPU has native bf16 — AMX or AVX512-BF16 — or on a GPU) the fast path runs again at every layer in the
course's default precision (``dtype="auto"``: bf16 autocast with float32 W_V on such a CPU) and the script
prints its time, the ratio float32 / auto and how far its per-step losses are from float32's; the memory
probe then covers that path too.

With ``--reference`` (default on) every layer also runs the reference implementation's per-step work
(EasyEdit's ``dinm_main.py``: a whole-model forward of the edit sequence with logits at every position and
a whole-model forward of the constraint under ``no_grad``, in float32), written with the course's engines —
not EasyEdit itself, which adds its own overheads (it re-tokenises every step) — and prints the fraction of
its CPU time the course's default path takes. With ``--bf16-weights`` (default on where the default
precision is not float32) the fast path also runs on the model loaded in bf16, editing a float32 master
copy of W_V: its time, its losses against float32's and (memory probe) its peak. With ``--pack`` (default on)
the default path also runs with both sequences packed into one row (``DINMSession(pack=True)``: one forward
and one backward per step instead of two): its time against the default's, its losses and its peak.

Before timing, each path runs a one-step edit (warm-up: first calls allocate).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def dtype_env(value: str | None):
    """``HELPERS_DTYPE=value`` inside (unset for ``None``), restored after."""
    old = os.environ.get("HELPERS_DTYPE")
    if value is None:
        os.environ.pop("HELPERS_DTYPE", None)
    else:
        os.environ["HELPERS_DTYPE"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HELPERS_DTYPE", None)
        else:
            os.environ["HELPERS_DTYPE"] = old


def run_edit(model, tokenizer, record, layer, *, fast, steps, lr, kl_weight, limits, kl_grad=True, pack=False):
    """One full edit (setup + steps), then restore; returns ``(wall seconds, history)``.

    ``history`` has the per-step losses, ``setup_seconds`` and ``cpu_seconds`` (CPU time of the process over
    the edit, all threads)."""
    import torch

    from helpers.detox.dinm import DINMSession

    sync = torch.cuda.synchronize if next(model.parameters()).is_cuda else (lambda: None)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    session = DINMSession(model, tokenizer, record, layer, fast=fast, pack=pack, **limits)
    setup = time.perf_counter() - t0
    history = session.run(steps=steps, lr=lr, kl_weight=kl_weight, kl_grad=kl_grad, final=False)
    sync()
    seconds = time.perf_counter() - t0
    history["cpu_seconds"] = time.process_time() - c0
    history["setup_seconds"] = setup
    session.restore()
    return seconds, history


def _load(args, dtype=None):
    import torch

    from helpers.common.models import load_model
    from helpers.safeedit.data import load_safeedit

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, device=args.device, dtype=dtype or torch.float32)
    record = load_safeedit(args.data)[args.record]
    return model, tokenizer, record


def _limits(args) -> dict:
    return {"max_prompt_tokens": args.max_prompt_tokens, "max_target_tokens": args.max_target_tokens,
            "max_kc_tokens": args.max_kc_tokens}


def probe_memory(args) -> dict:
    """(In a fresh process) peak resident memory of one edit with ``args.probe_memory`` = fast|full."""
    import torch

    from helpers.detox.dinm import default_lr

    model, tokenizer, record = _load(args, torch.bfloat16 if args.probe_memory == "fast-bf16w" else None)
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=False)
    rss_before = _status_kb("VmRSS")
    if not _reset_peak() or rss_before is None:
        return {"error": "no /proc/self/clear_refs or VmRSS here (Linux only)"}
    layer = args.layer_list[0]
    lr = args.lr if args.lr is not None else default_lr(model)
    with dtype_env(None if args.probe_memory in ("fast-auto", "fast-bf16w", "fast-packed") else "float32"):
        run_edit(model, tokenizer, record, layer, fast=args.probe_memory not in ("full", "reference"),
                 steps=args.steps, lr=lr, kl_weight=args.kl_weight, limits=_limits(args),
                 kl_grad=args.probe_memory != "reference", pack=args.probe_memory == "fast-packed")
    peak = _status_kb("VmHWM")
    return {"rss_before_mib": rss_before / 1024, "peak_mib": peak / 1024, "peak_extra_mib": (peak - rss_before) / 1024}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the embedded smollm2-135m-instruct")
    parser.add_argument("--data", default="sample")
    parser.add_argument("--record", type=int, default=0, help="index of the record in --data")
    parser.add_argument("--layers", default=None, help="comma-separated layers (default: the middle layer)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=None, help="default: helpers.detox.dinm.default_lr(model)")
    parser.add_argument("--kl-weight", type=float, default=1.0)
    parser.add_argument("--max-prompt-tokens", type=int, default=1024)
    parser.add_argument("--max-target-tokens", type=int, default=256)
    parser.add_argument("--max-kc-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="timed edits per path and layer (the best counts)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--require-speedup", type=float, default=None)
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="probe the peak memory of one edit per path in a fresh process (CPU, Linux)")
    parser.add_argument("--precision", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the fast path in the default precision (bf16 autocast on a bf16 CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the reference's per-step work (full forward, KL without gradient, float32)")
    parser.add_argument("--bf16-weights", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the fast path on the model loaded in bf16 (float32 master W_V), where the "
                             "default precision is not float32")
    parser.add_argument("--pack", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the default path with both sequences packed into one forward/backward")
    parser.add_argument("--probe-memory", choices=["fast", "full", "fast-auto", "reference", "fast-bf16w",
                                                   "fast-packed"],
                        default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.layer_list = [int(x) for x in args.layers.split(",")] if args.layers else None

    if args.probe_memory:
        if args.layer_list is None:
            raise SystemExit("--probe-memory needs --layers")
        print(json.dumps(probe_memory(args)))
        return 0

    import torch

    from helpers.common.models import cpu_bf16_support, precision
    from helpers.common.results import hardware
    from helpers.detox.dinm import default_lr
    from helpers.detox.edit_inputs import build_edit_inputs
    from helpers.detox.locate import num_layers

    model, tokenizer, record = _load(args)
    layers = args.layer_list or [num_layers(model) // 2]
    lr = args.lr if args.lr is not None else default_lr(model)
    limits = _limits(args)
    inputs = build_edit_inputs(tokenizer, record, **limits)
    print(f"record id {record['id']}: edit input {len(inputs.prompt_ids)}+{len(inputs.target_ids)} tokens, "
          f"knowledge constraint {len(inputs.kc_prompt_ids)}+{len(inputs.kc_answer_ids)} tokens; "
          f"{num_layers(model)} layers; {args.steps} steps; lr {lr}; {torch.get_num_threads()} torch threads; "
          f"{hardware()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    kw = dict(steps=args.steps, lr=lr, kl_weight=args.kl_weight, limits=limits)
    auto = precision(args.device)
    do_precision = args.precision and auto != "float32"
    if args.precision and not do_precision:
        print(f"precision axis skipped: the default precision here is float32 (native bf16: "
              f"{cpu_bf16_support() or 'no'})")
    pinned = dtype_env("float32")
    pinned.__enter__()
    for fast in (True, False):  # warm-up
        run_edit(model, tokenizer, record, layers[0], fast=fast, **{**kw, "steps": 1})

    per_layer, ok = [], True
    for layer in layers:
        runs = {"fast": [], "full": []}
        for _ in range(args.repeats):
            for name in ("fast", "full"):
                runs[name].append(run_edit(model, tokenizer, record, layer, fast=name == "fast", **kw))
        row = {"layer": layer}
        for name, items in runs.items():
            best_wall = min(s for s, _ in items)
            best_cpu = min(h["cpu_seconds"] for _, h in items)
            history = items[0][1]
            row[name] = {"seconds": best_wall, "cpu_seconds": best_cpu, "all_seconds": [s for s, _ in items],
                         "setup_seconds": history["setup_seconds"], "step_seconds": history["step_seconds"],
                         "loss": history["loss"], "nll": history["nll"], "kl": history["kl"]}
        a, b = row["fast"]["loss"], row["full"]["loss"]
        row["loss_max_rel_diff"] = max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b))
        row["agree"] = len(a) == len(b) and row["loss_max_rel_diff"] <= args.rtol
        row["speedup_wall"] = row["full"]["seconds"] / row["fast"]["seconds"]
        row["speedup_cpu"] = row["full"]["cpu_seconds"] / row["fast"]["cpu_seconds"]
        ok &= row["agree"]
        per_layer.append(row)
        print(f"layer {layer:>3}: fast {row['fast']['seconds']:7.2f} s ({row['fast']['cpu_seconds']:6.2f} s CPU) | "
              f"full {row['full']['seconds']:7.2f} s ({row['full']['cpu_seconds']:6.2f} s CPU) | speed-up "
              f"{row['speedup_wall']:.2f}x wall, {row['speedup_cpu']:.2f}x CPU | losses agree within rtol "
              f"{args.rtol}: {row['agree']} (max rel. diff {row['loss_max_rel_diff']:.1e})", flush=True)
    print("fast loss:", " ".join(f"{x:.4f}" for x in per_layer[0]["fast"]["loss"]))
    print("full loss:", " ".join(f"{x:.4f}" for x in per_layer[0]["full"]["loss"]))
    pinned.__exit__(None, None, None)

    if do_precision:
        with dtype_env(None):
            run_edit(model, tokenizer, record, layers[0], fast=True, **{**kw, "steps": 1})  # warm-up
            for row in per_layer:
                items = [run_edit(model, tokenizer, record, row["layer"], fast=True, **kw) for _ in range(args.repeats)]
                history = items[0][1]
                a, b = history["loss"], row["fast"]["loss"]
                row["fast_auto"] = {"precision": auto, "seconds": min(x for x, _ in items),
                                    "cpu_seconds": min(h["cpu_seconds"] for _, h in items),
                                    "step_seconds": history["step_seconds"], "loss": a, "nll": history["nll"],
                                    "kl": history["kl"]}
                row["auto_loss_max_rel_diff"] = max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b))
                row["speedup_auto_cpu"] = row["fast"]["cpu_seconds"] / row["fast_auto"]["cpu_seconds"]
                print(f"layer {row['layer']:>3}: fast float32 {row['fast']['seconds']:6.2f} s "
                      f"({row['fast']['cpu_seconds']:6.2f} s CPU) | fast {auto} {row['fast_auto']['seconds']:6.2f} s "
                      f"({row['fast_auto']['cpu_seconds']:6.2f} s CPU) | ratio {row['speedup_auto_cpu']:.2f}x CPU | "
                      f"losses vs float32: max rel. diff {row['auto_loss_max_rel_diff']:.1e}", flush=True)
        print(f"fast loss ({auto}):", " ".join(f"{x:.4f}" for x in per_layer[0]["fast_auto"]["loss"]))

    if args.reference:
        # what the reference implementation (EasyEdit's dinm_main.py) computes per step, written with the
        # course's engines: a whole-model forward of the edit sequence with logits at every position, a
        # whole-model forward of the constraint under no_grad (its KL carries no gradient there), float32
        with dtype_env("float32"):
            for row in per_layer:
                items = [run_edit(model, tokenizer, record, row["layer"], fast=False, kl_grad=False, **kw)
                         for _ in range(args.repeats)]
                row["reference"] = {"seconds": min(x for x, _ in items),
                                    "cpu_seconds": min(h["cpu_seconds"] for _, h in items),
                                    "loss": items[0][1]["loss"]}
                best = min(row[k]["cpu_seconds"] for k in ("fast", "fast_auto") if k in row)
                row["fraction_of_reference_cpu"] = best / row["reference"]["cpu_seconds"]
                print(f"layer {row['layer']:>3}: reference-style step (full forward, no-grad KL, float32) "
                      f"{row['reference']['seconds']:6.2f} s ({row['reference']['cpu_seconds']:6.2f} s CPU) | the "
                      f"course's default fast path takes {row['fraction_of_reference_cpu']:.2f}x its CPU time",
                      flush=True)

    if args.pack:
        # DINMSession(pack=True): the edit and constraint sequences in one row (block-diagonal mask), one forward
        # and one backward per step, in the default precision; against the default (one sequence after the other)
        with dtype_env(None):
            run_edit(model, tokenizer, record, layers[0], fast=True, pack=True, **{**kw, "steps": 1})  # warm-up
            for row in per_layer:
                base = row.get("fast_auto", row["fast"])
                items = [run_edit(model, tokenizer, record, row["layer"], fast=True, pack=True, **kw)
                         for _ in range(args.repeats)]
                history = items[0][1]
                row["fast_packed"] = {"precision": auto, "seconds": min(x for x, _ in items),
                                      "cpu_seconds": min(h["cpu_seconds"] for _, h in items),
                                      "step_seconds": history["step_seconds"], "loss": history["loss"]}
                row["packed_loss_max_rel_diff"] = max(abs(x - y) / max(abs(y), 1e-8)
                                                      for x, y in zip(history["loss"], base["loss"]))
                row["speedup_packed_cpu"] = base["cpu_seconds"] / row["fast_packed"]["cpu_seconds"]
                print(f"layer {row['layer']:>3}: fast {auto}, both sequences packed in one forward "
                      f"{row['fast_packed']['seconds']:6.2f} s ({row['fast_packed']['cpu_seconds']:6.2f} s CPU) | "
                      f"one after the other {base['cpu_seconds']:6.2f} s CPU | ratio "
                      f"{row['speedup_packed_cpu']:.2f}x CPU | losses: max rel. diff "
                      f"{row['packed_loss_max_rel_diff']:.1e}", flush=True)

    if args.bf16_weights and do_precision:
        del model
        bmodel, tokenizer, record = _load(args, torch.bfloat16)
        with dtype_env(None):
            run_edit(bmodel, tokenizer, record, layers[0], fast=True, **{**kw, "steps": 1})  # warm-up
            for row in per_layer:
                items = [run_edit(bmodel, tokenizer, record, row["layer"], fast=True, **kw)
                         for _ in range(args.repeats)]
                history = items[0][1]
                a, b = history["loss"], row["fast"]["loss"]
                row["fast_bf16w"] = {"precision": "bfloat16 weights, float32 W_V", "seconds": min(x for x, _ in items),
                                     "cpu_seconds": min(h["cpu_seconds"] for _, h in items),
                                     "step_seconds": history["step_seconds"], "loss": a}
                row["bf16w_loss_max_rel_diff"] = max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b))
                line = (f"layer {row['layer']:>3}: fast, bf16 weights + float32 W_V {row['fast_bf16w']['seconds']:6.2f} s "
                        f"({row['fast_bf16w']['cpu_seconds']:6.2f} s CPU) | vs fast float32 "
                        f"{row['fast']['cpu_seconds'] / row['fast_bf16w']['cpu_seconds']:.2f}x CPU | losses vs "
                        f"float32: max rel. diff {row['bf16w_loss_max_rel_diff']:.1e}")
                if "reference" in row:
                    row["bf16w_fraction_of_reference_cpu"] = (row["fast_bf16w"]["cpu_seconds"]
                                                              / row["reference"]["cpu_seconds"])
                    line += f" | {row['bf16w_fraction_of_reference_cpu']:.2f}x the reference-style CPU time"
                print(line, flush=True)
        print("fast loss (bf16 weights):", " ".join(f"{x:.4f}" for x in per_layer[0]["fast_bf16w"]["loss"]))
        model = bmodel

    memory = {}
    if args.memory and args.device == "cpu":
        names = ("fast", "full") + (("reference",) if args.reference else ()) + (
            ("fast-auto",) + (("fast-bf16w",) if args.bf16_weights else ()) if do_precision else ()) + (
            ("fast-packed",) if args.pack else ())
        for name in names:
            cmd = [sys.executable, __file__, "--probe-memory", name, "--layers", str(layers[0])]
            for flag in ("model", "data", "record", "steps", "lr", "kl_weight", "max_prompt_tokens",
                         "max_target_tokens", "max_kc_tokens", "threads"):
                value = getattr(args, flag)
                if value is not None:
                    cmd += [f"--{flag.replace('_', '-')}", str(value)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            memory[name] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.stderr[-500:]}
            m = memory[name]
            if "peak_mib" in m:
                print(f"memory, one {name} edit at layer {layers[0]}: peak {m['peak_mib']:.0f} MiB resident, "
                      f"{m['peak_extra_mib']:.0f} MiB on top of the loaded model ({m['rss_before_mib']:.0f} MiB)")
            else:
                print(f"memory probe ({name}) failed: {m['error']}")

    if args.out:
        from helpers.common.io import atomic_write_json

        payload = {"hardware": hardware(), "torch_threads": torch.get_num_threads(), "device": args.device,
                   "model": args.model or "smollm2-135m-instruct", "record_id": record["id"],
                   "n_layers": num_layers(model), "steps": args.steps, "lr": lr, "kl_weight": args.kl_weight,
                   "edit_tokens": [len(inputs.prompt_ids), len(inputs.target_ids)],
                   "kc_tokens": [len(inputs.kc_prompt_ids), len(inputs.kc_answer_ids)], "repeats": args.repeats,
                   "rtol": args.rtol, "load_average": os.getloadavg(), "layers": per_layer, "memory": memory,
                   "precision_default": auto, "cpu_bf16": cpu_bf16_support()}
        atomic_write_json(Path(args.out), payload)
        print(f"wrote {args.out}")
    if args.require_speedup is not None:
        ok &= per_layer[0]["speedup_cpu"] >= args.require_speedup
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
