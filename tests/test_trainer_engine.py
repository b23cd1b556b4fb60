"""The fine-tuner on the Hugging Face Trainer: the same per-step losses as the plain loop, and under a
2-process ``torchrun`` (gloo, CPU) synchronised gradients with a different shard per rank."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# a 2-process launch on a free port (--standalone: a local rendezvous), so tests can run side by side
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

EXAMPLES = [{"prompt": f"Say the number {n}.", "response": f"#### {n}" + " and done" * (n % 3)} for n in range(8)]


@pytest.fixture(scope="module")
def tiny():
    sys.path.insert(0, str(TESTS))
    from tiny_models import tiny_causal_lm

    from helpers.common.models import load_tokenizer

    tokenizer = load_tokenizer()
    return tiny_causal_lm(tokenizer), tokenizer


def test_trainer_engine_reproduces_the_loops_per_step_losses(tiny):
    from helpers.common.models import parameter_checksum
    from helpers.common.training import finetune, mean_loss

    model, tokenizer = tiny
    runs = {engine: finetune(model, EXAMPLES, tokenizer=tokenizer, epochs=3, lr=5e-3, batch_size=4, seed=1,
                             warmup_ratio=0.2, lr_schedule="cosine", progress=False, engine=engine)
            for engine in ("loop", "trainer")}
    loop, trainer = (runs[e].finetune_history for e in ("loop", "trainer"))
    assert trainer["engine"] == "trainer" and loop["engine"] == "loop"
    assert len(trainer["loss"]) == len(loop["loss"]) == 6
    assert trainer["loss"] == pytest.approx(loop["loss"], abs=1e-5)
    assert trainer["lr"] == pytest.approx(loop["lr"], rel=1e-9)
    assert trainer["loss"][-1] < trainer["loss"][0] - 0.5  # it learned
    assert parameter_checksum(runs["trainer"]) == pytest.approx(parameter_checksum(runs["loop"]), rel=1e-7)
    assert mean_loss(runs["trainer"], tokenizer, EXAMPLES) < mean_loss(model, tokenizer, EXAMPLES) - 0.5
    assert sorted(trainer["rank_slots"]) == list(range(24)) and trainer["world_size"] == 1


def test_trainer_engine_keeps_train_layers_and_accumulates_per_update(tiny):
    import torch

    from helpers.common.training import finetune

    model, tokenizer = tiny
    top = finetune(model, EXAMPLES, tokenizer=tokenizer, epochs=2, lr=1e-2, batch_size=2, grad_accum=2,
                   train_layers=1, progress=False, engine="trainer")
    assert torch.equal(top.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(top.model.layers[1].mlp.up_proj.weight, model.model.layers[1].mlp.up_proj.weight)
    assert len(top.finetune_history["loss"]) == 4  # 8 batches of 2, one loss per update of 2 batches
    assert all(p.requires_grad for p in top.parameters())  # a plain model again


def test_trainer_engine_resumes_a_fine_tuning_run_from_its_newest_checkpoint(tiny, tmp_path, monkeypatch):
    """``finetune(checkpoint_dir=…, save_steps=2)``: a run killed at its 5th update resumes from checkpoint-4
    (weights, optimizer, schedule) and ends with the uninterrupted run's per-step losses and weights; the folder
    is removed at the end; a folder of another run's checkpoints is refused."""
    from trainer_crash import count_trainer_steps, crash_trainer_at

    from helpers.common.models import parameter_checksum
    from helpers.common.training import finetune

    model, tokenizer = tiny
    settings = dict(tokenizer=tokenizer, epochs=3, lr=5e-3, batch_size=4, seed=1, warmup_ratio=0.2,
                    lr_schedule="cosine", progress=False, save_steps=2)
    whole = finetune(model, EXAMPLES, checkpoint_dir=tmp_path / "whole", **settings)
    assert whole.finetune_history["engine"] == "trainer" and not (tmp_path / "whole").exists()

    crash_trainer_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        finetune(model, EXAMPLES, checkpoint_dir=tmp_path / "cut", **settings)
    count_trainer_steps(monkeypatch)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["checkpoint-4", "run.json"]
    with pytest.raises(ValueError, match="other settings"):
        finetune(model, EXAMPLES, checkpoint_dir=tmp_path / "cut", **dict(settings, lr=1e-3))
    resumed = finetune(model, EXAMPLES, checkpoint_dir=tmp_path / "cut", **settings)
    a, b = whole.finetune_history, resumed.finetune_history
    assert b["resumed_from_step"] == 4 and "resumed_from_step" not in a
    assert len(b["loss"]) == len(a["loss"]) == 6 and b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    assert b["lr"] == pytest.approx(a["lr"], rel=1e-9)
    assert sorted(b["rank_slots"]) == list(range(24))           # the first 4 batches not trained twice
    assert parameter_checksum(resumed) == pytest.approx(parameter_checksum(whole), rel=1e-7)
    assert parameter_checksum(resumed) != pytest.approx(parameter_checksum(model), rel=1e-7)
    assert not (tmp_path / "cut").exists()
    with pytest.raises(ValueError, match="needs engine='trainer'"):
        finetune(model, EXAMPLES, checkpoint_dir=tmp_path / "loop", engine="loop", **settings)


def test_engine_names_are_checked(tiny, monkeypatch):
    from helpers.common.training import finetune, resolve_engine

    model, tokenizer = tiny
    with pytest.raises(ValueError, match="engine must be one of"):
        finetune(model, EXAMPLES, tokenizer=tokenizer, engine="deepspeed", progress=False)
    assert resolve_engine("auto") == "loop"
    monkeypatch.setenv("HELPERS_ENGINE", "trainer")
    assert resolve_engine("auto") == "trainer"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("HELPERS_ENGINE")
    assert resolve_engine("auto") == "trainer"
    with pytest.raises(ValueError, match="no gradient sync"):
        resolve_engine("loop")


DDP_SCRIPT = """
import json, os, sys
sys.path.insert(0, {tests!r})
from tiny_models import tiny_causal_lm
from helpers.common.models import load_tokenizer, parameter_checksum
from helpers.common.training import finetune
examples = json.loads({examples!r})
tokenizer = load_tokenizer()
trained = finetune(tiny_causal_lm(tokenizer), examples, tokenizer=tokenizer, epochs=3, lr=5e-3, batch_size=4,
                   seed=1, warmup_ratio=0.2, progress=False)
h = trained.finetune_history
with open(os.path.join({out!r}, "rank%s.json" % os.environ.get("RANK", "0")), "w") as f:
    json.dump({{"engine": h["engine"], "world_size": h.get("world_size", 1), "slots": h.get("rank_slots"),
               "loss": h["loss"], "checksum": parameter_checksum(trained),
               "head": trained.model.layers[1].mlp.down_proj.weight[0, :8].tolist()}}, f)
"""


def test_torchrun_two_processes_synchronise_gradients_and_shard_the_batches(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TESTS), examples=json.dumps(EXAMPLES), out=str(tmp_path)))
    # float32: equal to one process within rounding (under bf16 autocast each rank's shard rounds differently)
    env = dict(os.environ, OMP_NUM_THREADS="1", HELPERS_DTYPE="float32")
    one = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    single = json.loads((tmp_path / "rank0.json").read_text())
    (tmp_path / "rank0.json").rename(tmp_path / "single.json")
    two = subprocess.run([*TORCHRUN, str(script)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert single["engine"] == "loop" and all(r["engine"] == "trainer" and r["world_size"] == 2 for r in ranks)
    # gradients synchronised: both ranks end with the same weights
    assert ranks[0]["head"] == ranks[1]["head"] and ranks[0]["checksum"] == ranks[1]["checksum"]
    # each rank trained on its own half of every batch
    assert len(ranks[0]["slots"]) == len(ranks[1]["slots"]) == 12
    assert not set(ranks[0]["slots"]) & set(ranks[1]["slots"])
    assert sorted(ranks[0]["slots"] + ranks[1]["slots"]) == list(range(24))
    # and the result is the one-process run's, to float32 reduction-order noise
    assert ranks[0]["loss"] == pytest.approx(single["loss"], abs=1e-4)
    assert ranks[0]["head"] == pytest.approx(single["head"], abs=1e-5)


RESUME_SCRIPT = """
import json, os, sys
sys.path.insert(0, {tests!r})
from tiny_models import tiny_causal_lm
from transformers import Trainer
from helpers.common.models import load_tokenizer, parameter_checksum
from helpers.common.training import finetune
if os.environ.get("CRASH_AT"):
    calls, step = [], Trainer.training_step
    def crash(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == int(os.environ["CRASH_AT"]):
            raise SystemExit(3)
        return step(self, *args, **kwargs)
    Trainer.training_step = crash
examples = json.loads({examples!r})
tokenizer = load_tokenizer()
trained = finetune(tiny_causal_lm(tokenizer), examples, tokenizer=tokenizer, epochs=3, lr=5e-3, batch_size=4,
                   seed=1, warmup_ratio=0.2, progress=False, checkpoint_dir={out!r} + "/checkpoints", save_steps=2)
h = trained.finetune_history
with open(os.path.join({out!r}, "resumed%s.json" % os.environ.get("RANK", "0")), "w") as f:
    json.dump({{"loss": h["loss"], "from": h.get("resumed_from_step"), "slots": h["rank_slots"],
               "checksum": parameter_checksum(trained)}}, f)
"""


def test_torchrun_fine_tuning_resumes_from_a_checkpoint_on_both_ranks(tmp_path):
    """2 processes, ``checkpoint_dir`` with ``save_steps=2``: killed at the 5th update, the relaunch resumes both
    ranks from checkpoint-4 (the shared folder, one random state per rank) and ends with the one-process,
    uninterrupted run's per-step losses and weights."""
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(TESTS), examples=json.dumps(EXAMPLES), out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1", HELPERS_DTYPE="float32")
    one = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    single = json.loads((tmp_path / "resumed0.json").read_text())
    (tmp_path / "resumed0.json").unlink()
    launch = [*TORCHRUN, str(script)]
    cut = subprocess.run(launch, env=dict(env, CRASH_AT="5"), capture_output=True, text=True, timeout=600)
    assert cut.returncode != 0 and not (tmp_path / "resumed0.json").exists()
    saved = sorted(p.name for p in (tmp_path / "checkpoints" / "checkpoint-4").iterdir())
    assert "course_history_rank0.json" in saved and "course_history_rank1.json" in saved
    again = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"resumed{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["from"] == ranks[1]["from"] == 4 and single["from"] is None
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert sorted(ranks[0]["slots"] + ranks[1]["slots"]) == list(range(24))
    assert ranks[0]["loss"] == pytest.approx(single["loss"], abs=1e-4)
    assert ranks[0]["checksum"] == pytest.approx(single["checksum"], rel=1e-6)
    assert not (tmp_path / "checkpoints").exists()


def one_and_two_processes(args, one_out, two_out, one_extra=()):
    """``python -m helpers ARGS`` and ``torchrun --nproc_per_node 2 -m helpers ARGS`` (gloo, one thread each), in
    float32: equal to one process within rounding (under bf16 autocast each rank's shard rounds differently)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HELPERS_DTYPE="float32")
    one = subprocess.run([sys.executable, "-m", "helpers", *args, *one_extra, "--out", str(one_out)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*TORCHRUN, "-m", "helpers", *args, "--out", str(two_out)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    return one, two


def test_torchrun_llm2llm_writes_one_run_folder_equal_to_one_process(tmp_path, shared_data):
    """``torchrun --nproc_per_node 2 -m helpers llm2llm``: rank 0 alone writes --out and prints the table; the
    run equals a one-process run with the same seed (same seeds, new examples, test answers)."""
    args = ["llm2llm", "--dataset", "trec", "--seed-size", "8", "--iterations", "1", "--test-size", "8",
            "--epochs", "1", "--batch-size", "4", "--eval-batch-size", "3", "--train-layers", "1", "--no-progress"]
    one, two = one_and_two_processes(args, tmp_path / "one", tmp_path / "two")
    assert two.stdout.count("written:") == 1  # one report, from rank 0
    a, b = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert a["config"]["world_size"] == 1 and b["config"]["world_size"] == 2
    # the predictions were split: 8 records in batches of 3 (3, 3, 2) -> rank 0 batches 0 and 2, rank 1 batch 1
    first, last = b["timing"][0], b["timing"][-1]
    assert first["train_predicted_per_rank"] == [5, 3] and last["test_predicted_per_rank"] == [5, 3]
    assert "test_predicted_per_rank" not in a["timing"][0]
    keys = ("train_size", "wrong", "new_examples", "test_correct")
    assert [[e[k] for k in keys] for e in a["iterations"]] == [[e[k] for k in keys] for e in b["iterations"]]
    for name in ("seed.jsonl", "iteration_00/new_examples.jsonl", "iteration_01/test_predictions.jsonl"):
        rows = [[json.loads(line) for line in (tmp_path / run / name).read_text().splitlines()] for run in ("one", "two")]
        if name.endswith("test_predictions.jsonl"):
            rows = [[r["prediction"] for r in run] for run in rows]
        assert rows[0] == rows[1], name
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_torchrun_safeedit_eval_dinm_shards_the_records_and_equals_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m helpers safeedit-eval --method dinm``: rank 0 edits records 0 and 2, rank 1
    records 1 and 3 (each instance names its rank), the ranks exchange results, rank 0 alone writes --out and the
    log (all four records), and replies, layers, losses and scores equal a one-process run's."""
    args = ["safeedit-eval", "--data", "sample", "--limit", "4", "--method", "dinm", "--option", "steps=2",
            "--option", "max_prompt_tokens=64", "--option", "max_target_tokens=16", "--option", "max_kc_tokens=16",
            "--max-new-tokens", "4", "--max-input-tokens", "64", "--judge", "keyword", "--second-judge", "none"]
    one, two = one_and_two_processes(args, tmp_path / "one.json", tmp_path / "two.json")
    assert two.stdout.count("wrote ") == 1
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert b["settings"]["world_size"] == 2 and b["settings"]["sharded"] and not a["settings"]["sharded"]
    assert [i.get("rank") for i in b["instances"]] == [0, 1, 0, 1] and "rank" not in a["instances"][0]
    for key in ("id", "responses", "labels", "toxic_layer"):
        assert [i[key] for i in a["instances"]] == [i[key] for i in b["instances"]], key
    for x, y in zip(a["instances"], b["instances"]):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
    assert a["aggregate"] == b["aggregate"]
    logged = [json.loads(line) for line in (tmp_path / "two.log.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in logged if "id" in r) == sorted(str(i["id"]) for i in b["instances"])


def test_batch_size_must_split_over_the_processes(tmp_path, monkeypatch):
    from helpers.llm2llm import run_llm2llm

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\) 3 must be a multiple of the 2 processes"):
        run_llm2llm("trec", seed_size=4, iterations=0, out_dir=tmp_path / "run", batch_size=3)
    assert not (tmp_path / "run").exists()


def test_torchrun_safeedit_eval_sft_writes_one_result_equal_to_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m helpers safeedit-eval --method sft``: the SFT baseline trains on the
    Trainer engine with both ranks (world_size 2), rank 0 alone writes --out and prints, and the scores and the
    training losses equal a one-process run's."""
    args = ["safeedit-eval", "--data", "sample", "--limit", "1", "--method", "sft", "--option", "limit=4",
            "--option", "epochs=1", "--option", "batch_size=2", "--option", "max_prompt_tokens=48",
            "--option", "max_response_tokens=16", "--max-new-tokens", "4", "--max-input-tokens", "64",
            "--judge", "keyword", "--second-judge", "none"]
    one, two = one_and_two_processes(args, tmp_path / "one.json", tmp_path / "two.json")
    assert two.stdout.count("wrote ") == 1                                   # one report, from rank 0
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert a["settings"]["world_size"] == 1 and b["settings"]["world_size"] == 2
    assert a["training"]["engine"] == "loop" and b["training"]["engine"] == "trainer"
    assert b["training"]["world_size"] == 2 and a["training"]["n_train_pairs"] == b["training"]["n_train_pairs"] == 4
    assert len(a["training"]["loss"]) == len(b["training"]["loss"]) == 2
    assert b["training"]["loss"] == pytest.approx(a["training"]["loss"], abs=1e-4)
    assert [i["responses"] for i in a["instances"]] == [i["responses"] for i in b["instances"]]
    assert a["aggregate"] == b["aggregate"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json", "two.json"]  # no stray log or rank file


def test_torchrun_safeedit_eval_dpo_keeps_the_global_batch_and_equals_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m helpers safeedit-eval --method dpo``: TRL's DPOTrainer gets
    ``batch_size / 2`` per rank, so each update sees the same 2 pairs as one process and the DPO losses (averaged
    over the ranks) and the answers equal a one-process run's; rank 0 alone writes --out."""
    args = ["safeedit-eval", "--data", "sample", "--limit", "1", "--method", "dpo", "--option", "limit=4",
            "--option", "steps=2", "--option", "batch_size=2", "--option", "lr=5e-4", "--option",
            "max_prompt_tokens=48", "--option", "max_response_tokens=16", "--max-new-tokens", "4",
            "--max-input-tokens", "64", "--judge", "keyword", "--second-judge", "none"]
    one, two = one_and_two_processes(args, tmp_path / "one.json", tmp_path / "two.json")
    assert two.stdout.count("wrote ") == 1
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert (a["training"]["world_size"], b["training"]["world_size"]) == (1, 2)
    assert len(a["training"]["loss"]) == len(b["training"]["loss"]) == 2
    assert a["training"]["loss"][1] != pytest.approx(a["training"]["loss"][0], abs=1e-3)  # the first update moved it
    assert b["training"]["loss"] == pytest.approx(a["training"]["loss"], abs=1e-4)
    assert [i["responses"] for i in a["instances"]] == [i["responses"] for i in b["instances"]]
    assert a["aggregate"] == b["aggregate"]


def test_torchrun_safeedit_table_writes_one_table_equal_to_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m helpers safeedit-table``: the methods run in the launched processes (no
    child process per method), rank 0 alone writes the table, its log and the markdown, equal to one process."""
    args = ["safeedit-table", "--data", "sample", "--limit", "1", "--methods", "vanilla,self-reminder",
            "--train-data", "three", "--max-new-tokens", "3", "--max-input-tokens", "48", "--judge", "keyword",
            "--second-judge", "none"]
    one, two = one_and_two_processes(args, tmp_path / "one.json", tmp_path / "two.json",
                                     one_extra=["--no-isolate"])
    assert two.stdout.count("wrote ") == 1 and "(own process)" not in two.stdout
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert a["settings"]["world_size"] == 1 and b["settings"]["world_size"] == 2
    assert set(a["rows"]) == set(b["rows"]) == {"vanilla", "self-reminder"}
    for name in a["rows"]:
        assert a["rows"][name]["aggregate"] == b["rows"][name]["aggregate"], name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json", "one.log.jsonl", "one.md", "two.json",
                                                          "two.log.jsonl", "two.md"]
    assert len((tmp_path / "two.log.jsonl").read_text().splitlines()) == len(
        (tmp_path / "one.log.jsonl").read_text().splitlines())


SHARD_SCRIPT = """
import json, os, sys
sys.path.insert(0, {tests!r})
from tiny_models import tiny_causal_lm
from helpers.common.distributed import rank, sharded_work, world_size
from helpers.common.generation import generate
from helpers.common.models import load_tokenizer
from helpers.llm2llm.label_scoring import score_labels

tokenizer = load_tokenizer()
model = tiny_causal_lm(tokenizer)
prompts = ["Name a colour." + " Please." * (n % 4) for n in range(7)]
calls = []
original = model.generate
model.generate = lambda **kw: calls.append(len(kw["input_ids"])) or original(**kw)
with sharded_work() as sharding:
    texts = generate(model, tokenizer, prompts, max_new_tokens=4, batch_size=2, progress=False)
    scores = score_labels(model, tokenizer, prompts, ["yes", "no"], batch_size=2, progress=False)
    sampled = generate(model, tokenizer, prompts, max_new_tokens=4, batch_size=2, progress=False,
                       do_sample=True, seed=3)
with open(os.path.join({out!r}, f"shard{{rank()}}_{{world_size()}}.json"), "w") as f:
    json.dump({{"texts": texts, "scores": scores, "sampled": sampled, "calls": calls,
               "per_rank": sharding.per_rank}}, f)
"""


def test_sharded_work_splits_generation_and_label_scoring_batches_over_two_ranks(tmp_path):
    """Inside ``sharded_work`` under ``torchrun --nproc_per_node 2``: greedy generation and label scoring run
    every other batch on each rank (rank 0 batches 0 and 2, rank 1 batches 1 and 3 of 2+2+2+1 prompts), every rank
    returns every output, equal to one process; sampled generation is not split (both ranks run all 4 batches)."""
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT.format(tests=str(TESTS), out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1", HELPERS_DTYPE="float32")
    one = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*TORCHRUN, str(script)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    single = json.loads((tmp_path / "shard0_1.json").read_text())
    ranks = [json.loads((tmp_path / f"shard{r}_2.json").read_text()) for r in (0, 1)]
    assert single["calls"] == [2, 2, 2, 1] * 2                  # greedy, then sampled: 4 batches each
    assert ranks[0]["calls"] == [2, 2] + [2, 2, 2, 1]             # greedy: batches 0 and 2; sampled: all
    assert ranks[1]["calls"] == [2, 1] + [2, 2, 2, 1]             # greedy: batches 1 and 3; sampled: all
    assert ranks[0]["per_rank"] == ranks[1]["per_rank"] == [8, 6]  # 4 + 4 and 3 + 3 prompts (texts + scores)
    for r in ranks:
        assert r["texts"] == single["texts"] and r["sampled"] == single["sampled"]
        assert sum(r["scores"], []) == pytest.approx(sum(single["scores"], []), abs=1e-6)
