"""LLM2LLM with the reference's GSM8K settings: the cosine schedule, `--preset reference`, the duplicate filter on
the question, and the reference's sampled evaluation as an option (greedy stays the default)."""
from __future__ import annotations

import json
import math

import pytest
from test_backend import FakeOpenAIServer

from helpers.cli import build_parser
from helpers.cli import main as cli_main
from helpers.llm2llm.commands import REFERENCE, apply_preset
from helpers.llm2llm.gsm8k import GSM8KTask
from helpers.llm2llm.round import verify_new_examples


def _lr_curve(schedule: str) -> list[float]:
    import torch
    from tiny_models import tiny_causal_lm

    from helpers.common.models import load_tokenizer
    from helpers.common.training import finetune

    tokenizer = load_tokenizer(None)
    torch.manual_seed(0)
    model = tiny_causal_lm(tokenizer, layers=1, hidden=16)
    examples = [{"prompt": f"Say {i}.", "response": str(i)} for i in range(4)]
    trained = finetune(model, examples, tokenizer=tokenizer, epochs=20, lr=1e-3, batch_size=4, warmup_ratio=0.1,
                       lr_schedule=schedule, progress=False)
    return trained.finetune_history["lr"]


def test_cosine_schedule_warms_up_then_follows_a_cosine_to_zero():
    cosine, linear = _lr_curve("cosine"), _lr_curve("linear")
    assert len(cosine) == len(linear) == 20
    warmup, total = 2, 20  # int(0.1 · 20) updates of warm-up
    for step, (c, lin) in enumerate(zip(cosine, linear), start=1):  # the rate after `step` updates
        if step < warmup:
            assert c == pytest.approx(lin)
        else:
            t = (step - warmup) / (total - warmup)
            assert c == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * t)), abs=1e-9)
            assert lin == pytest.approx(1e-3 * (1 - t), abs=1e-9)
    mid = (warmup + total) // 2
    assert cosine[mid - 1] == pytest.approx(5e-4) and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    assert cosine[5] > linear[5], "a cosine stays higher than a line early on"


def _args(*argv):
    argv = ["llm2llm", "--dataset", "gsm8k", "--seed-size", "74", "--iterations", "1", "--out", "runs/x", *argv]
    args = build_parser().parse_args(argv)
    args.argv = argv
    apply_preset(args)
    return args


def test_preset_reference_sets_the_reference_where_the_command_line_does_not():
    args = _args("--preset", "reference")
    assert {k: getattr(args, k) for k in REFERENCE} == REFERENCE and args.dedup_on == "question"
    assert args.batch_size * args.grad_accum == 128 and args.lr_schedule == "cosine" and args.max_length == 1024
    given = _args("--preset", "reference", "--lr", "1e-5", "--batch-size", "4")
    assert given.lr == 1e-5 and given.batch_size * given.grad_accum == 128, "explicit flags win; batch stays 128"
    plain = _args()
    assert plain.lr_schedule == "linear" and plain.grad_accum == 1 and plain.lr == 5e-5, "no preset, no change"


def test_preset_reference_refuses_partial_training_before_anything_loads(tmp_path, capsys):
    status = cli_main(["llm2llm", "--dataset", "gsm8k", "--seed-size", "4", "--iterations", "1", "--preset",
                       "reference", "--train-layers", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error: --preset reference is full fine-tuning") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_the_duplicate_filter_never_compares_the_shared_instruction():
    from helpers.llm2llm.gsm8k import STUDENT_INSTRUCTION

    record = {"question": "Tom has 3 pens and buys 2 more. How many pens does he have?",
              "answer": "3 + 2 = <<3+2=5>>5\n#### 5", "gold": "5"}
    default = GSM8KTask().dedup_text(record)
    assert STUDENT_INSTRUCTION not in default and default.startswith(record["question"]) and "#### 5" in default
    assert GSM8KTask(dedup_on="question").dedup_text(record) == record["question"]
    with pytest.raises(ValueError, match="dedup_on"):
        GSM8KTask(dedup_on="answer")


def test_the_reference_filter_compares_questions_only():
    task = GSM8KTask(dedup_on="question")
    story = ("Maria bakes 12 muffins every morning for the school fair and sells each muffin for 2 dollars "
             "to the parents who visit. How many dollars does she earn from one morning of muffins?")
    seed = {"question": story, "answer": "12 * 2 = <<12*2=24>>24\n#### 24", "gold": "24", "origin": "seed"}
    assert task.dedup_text(seed) == story
    reworded = story.replace("every morning", "each morning")  # one word: ROUGE-L on the question ≈ 0.97
    new_numbers = story.replace("12", "30").replace("2 dollars", "5 dollars").replace("Maria", "Omar")
    replies = [f"Question: {reworded}\nAnswer: 12 * 2 = <<12*2=24>>24\n#### 24",
               f"Question: {new_numbers}\nAnswer: 30 * 5 = <<30*5=150>>150\n#### 150"]
    accepted, rejected = verify_new_examples(task, replies, [seed, seed], [seed], set(), iteration=1)
    assert [r["question"] for r in accepted] == [new_numbers]
    assert len(rejected) == 1 and rejected[0]["reason"].startswith("near-copy (ROUGE-L")


def test_gsm8k_eval_samples_like_the_reference_only_when_asked(monkeypatch, tmp_path):
    import helpers.common.models

    monkeypatch.setattr(helpers.common.models, "load_model", lambda *a, **k: pytest.fail("no model may load"))
    data = tmp_path / "gsm.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "#### 4"}) + "\n")
    bodies = {}
    for decoding in ("greedy", "reference"):
        out = tmp_path / f"{decoding}.json"
        with FakeOpenAIServer(lambda body: "2 + 2 = 4\n#### 4") as fake:
            assert cli_main(["gsm8k-eval", "--data", str(data), "--backend", "openai:tiny", "--backend-url", fake.url,
                             "--decoding", decoding, "--seed", "7", "--no-progress", "--out", str(out)]) == 0
        bodies[decoding] = fake.requests[0]["body"]
        assert json.loads(out.read_text())["accuracy"] == 1.0
    assert bodies["greedy"]["temperature"] == 0
    assert bodies["reference"]["temperature"] == 0.7 and bodies["reference"]["top_p"] == 0.9
    assert bodies["reference"]["seed"] == 7
    assert json.loads((tmp_path / "reference.json").read_text())["decoding"] == {"temperature": 0.7, "top_p": 0.9,
                                                                                 "seed": 7}
