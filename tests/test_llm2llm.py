"""LLM2LLM on GSM8K (chapter 07): student fine-tuning, programmatic teacher, verified augmentation, the loop.

The loop tests use a tiny random Llama (2 blocks, hidden size 16, the embedded model's tokenizer) as the
student: it answers every problem wrongly, which is exactly what exercises the augmentation path, and it
trains in a second. The chapter notebook runs the same code with the real embedded student.
"""
from __future__ import annotations

import json

import pytest

from helpers.common.io import read_jsonl
from helpers.common.teacher import NAMED_TEACHERS, Teacher, get_teacher
from helpers.common.text import NearDuplicateIndex, rouge_l
from helpers.llm2llm.gsm8k import GSM8KTask, load_gsm8k, read_gsm8k_file, strip_annotations
from helpers.llm2llm.gsm8k_teacher import (
    NotTemplatable,
    ProgrammaticGSM8KTeacher,
    build_template,
    seed_from_prompt,
    teacher_prompt,
)
from helpers.llm2llm.loop import run_llm2llm

NATALIA_Q = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?")
NATALIA_A = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
             "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
NATALIA = {"question": NATALIA_Q, "answer": NATALIA_A, "gold": "72", "origin": "seed"}
VALID_REPLY = ("Question: A farmer has 30 hens and buys 12 more. Then he sells 10 of them. How many hens "
               "does the farmer have now?\nAnswer: He has 30+12 = <<30+12=42>>42 hens.\n"
               "After selling he has 42-10 = <<42-10=32>>32 hens.\n#### 32")


# ----------------------------------------------------------------------------------------------------
# fixtures: a tiny student, a small task of templatable problems
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from helpers.common.models import load_model, load_tokenizer

    folder = tmp_path_factory.mktemp("tiny_student")
    tokenizer = load_tokenizer(None)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    model, tokenizer = load_model(str(folder), device="cpu")
    return str(folder), model, tokenizer


class SmallGSM8K(GSM8KTask):
    """GSM8K with a training split of six problems the programmatic teacher can vary, and a short budget."""

    def __init__(self):
        super().__init__(max_new_tokens=8)
        pool = load_gsm8k("train", limit=120)
        templatable = []
        for record in pool:
            try:
                build_template(record["question"], record["answer"])
            except NotTemplatable:
                continue
            templatable.append(record)
        self._train = templatable[:6]

    def load(self, split, limit=None):
        return self._train[:limit] if split == "train" else load_gsm8k("test", limit)


class RecordingTeacher(Teacher):
    """Wraps a teacher and keeps every prompt it was asked."""

    def __init__(self, inner, extra_reply=None):
        super().__init__()
        self.inner, self.extra_reply, self.prompts = inner, extra_reply, []
        self.name = f"recording:{inner.name}"

    def _complete(self, prompts, **settings):
        self.prompts += list(prompts)
        replies = self.inner._complete(prompts, **settings)
        if self.extra_reply is not None:
            replies = [self.extra_reply(p) for p in prompts]
        return replies


LOOP = dict(seed_size=4, per_wrong=1, test_size=2, epochs=1, batch_size=4, max_length=192, progress=False)


@pytest.fixture(scope="module")
def full_run(tiny_student, tmp_path_factory, shared_data):
    """An uninterrupted two-iteration run, with the teacher's prompts recorded."""
    path, model, tokenizer = tiny_student
    teacher = RecordingTeacher(ProgrammaticGSM8KTeacher())
    out = tmp_path_factory.mktemp("run_full")
    summary = run_llm2llm(SmallGSM8K(), teacher, iterations=2, out_dir=out, student=(model, tokenizer), **LOOP)
    return summary, teacher, out


# ----------------------------------------------------------------------------------------------------
# ROUGE-L and deduplication
# ----------------------------------------------------------------------------------------------------
def test_rouge_l_values():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("a b c", "x y z") == 0.0
    # LCS("a b c d", "a c d e") = 3 → F1 = 2·3/(4+4)
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)


def test_near_duplicate_index_finds_near_copies_only():
    index = NearDuplicateIndex(0.95)
    text = " ".join(f"word{i}" for i in range(40))
    index.add(text, "original")
    assert index.match(text.replace("word7", "other")) == (pytest.approx(39 / 40), "original")
    assert index.match(" ".join(f"word{i}" for i in range(0, 40, 2))) is None


# ----------------------------------------------------------------------------------------------------
# student fine-tuning
# ----------------------------------------------------------------------------------------------------
def test_training_text_is_the_evaluation_prompt_plus_response(tiny_student):
    from helpers.common.generation import chat_prompt
    from helpers.common.training import IGNORE_INDEX, encode_example

    _, _, tokenizer = tiny_student
    encoded = encode_example(tokenizer, "What is 2+2?", "2+2 = 4\n#### 4")
    prompt_ids = [i for i, l in zip(encoded["input_ids"], encoded["labels"]) if l == IGNORE_INDEX]
    response_ids = [l for l in encoded["labels"] if l != IGNORE_INDEX]
    assert tokenizer.decode(prompt_ids) == chat_prompt(tokenizer, "What is 2+2?")
    assert tokenizer.decode(response_ids) == "2+2 = 4\n#### 4<|im_end|>"  # the model learns to stop


def test_finetune_learns_is_seeded_and_leaves_the_base_untouched(tiny_student):
    from helpers.common.models import parameter_checksum
    from helpers.common.training import finetune, mean_loss

    _, model, tokenizer = tiny_student
    examples = [{"prompt": f"Say the number {n}.", "response": f"#### {n}"} for n in range(4)]
    before = parameter_checksum(model)
    loss_before = mean_loss(model, tokenizer, examples)
    trained = finetune(model, examples, tokenizer=tokenizer, epochs=6, lr=1e-2, batch_size=2, progress=False)
    again = finetune(model, examples, tokenizer=tokenizer, epochs=6, lr=1e-2, batch_size=2, progress=False)
    assert parameter_checksum(model) == before
    assert mean_loss(trained, tokenizer, examples) < loss_before - 0.5
    assert parameter_checksum(trained) == parameter_checksum(again)
    assert len(trained.finetune_history["loss"]) == 12


def test_finetune_train_layers_and_lora(tiny_student):
    import torch

    from helpers.common.training import finetune

    _, model, tokenizer = tiny_student
    examples = [{"prompt": "Hi", "response": "#### 1"}, {"prompt": "Yo", "response": "#### 2"}]
    top = finetune(model, examples, tokenizer=tokenizer, epochs=1, lr=1e-2, train_layers=1, progress=False)
    assert torch.equal(top.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(top.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert not torch.equal(top.model.layers[1].mlp.up_proj.weight, model.model.layers[1].mlp.up_proj.weight)
    lora = finetune(model, examples, tokenizer=tokenizer, epochs=1, lr=1e-2, lora=True, lora_r=2, progress=False)
    assert type(lora) is type(model)  # adapters merged back into a plain model
    assert not torch.equal(lora.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight)


def test_finetune_rejects_bad_examples(tiny_student):
    from helpers.common.training import finetune

    _, model, tokenizer = tiny_student
    with pytest.raises(ValueError, match="example 1 has no 'response'"):
        finetune(model, [{"prompt": "a", "response": "b"}, {"prompt": "c"}], tokenizer=tokenizer, progress=False)


# ----------------------------------------------------------------------------------------------------
# GSM8K task: answer extraction and teacher replies
# ----------------------------------------------------------------------------------------------------
def test_answer_extraction_and_scoring(monkeypatch):
    import helpers.common.generation

    outputs = ["She has 1,250.00 dollars.\n#### 1,250.00", "The answer is $36.", "I am not sure.", "#### 8"]
    monkeypatch.setattr(helpers.common.generation, "generate", lambda model, tok, prompts, **kw: outputs[:len(prompts)])
    records = [{"question": f"q{i}", "answer": "", "gold": g} for i, g in enumerate(["1250", "36", "3", "7"])]
    results = GSM8KTask().predict(None, None, records, progress=False)
    assert [r["prediction"] for r in results] == ["1250", "36", None, "8"]
    assert [r["correct"] for r in results] == [True, True, False, False]
    assert set(results[0]) >= {"question", "gold", "prediction", "output", "correct"}


def test_student_target_drops_calculator_annotations():
    task = GSM8KTask()
    assert strip_annotations(NATALIA_A).startswith("Natalia sold 48/2 = 24 clips in May.")
    assert "<<" not in task.target(NATALIA) and task.target(NATALIA).endswith("#### 72")
    assert NATALIA_Q in task.prompt(NATALIA)


def test_teacher_reply_parsing_verifies_and_explains_rejections():
    task = GSM8KTask()
    accepted, rejected = task.parse_teacher_reply(VALID_REPLY + "\nHope this helps!", NATALIA)
    assert rejected == [] and len(accepted) == 1
    record = accepted[0]
    assert record["gold"] == "32" and record["origin"] == "generated" and record["parent"] == task.key(NATALIA)
    assert record["answer"].endswith("#### 32")  # chatter after the final answer is cut

    wrong = VALID_REPLY.replace("<<42-10=32>>32", "<<42-10=30>>30").replace("#### 32", "#### 30")
    accepted, rejected = task.parse_teacher_reply(wrong, NATALIA)
    assert accepted == [] and "42-10 = 32, not 30" in rejected[0]["reason"]

    accepted, rejected = task.parse_teacher_reply("I cannot help with that.", NATALIA)
    assert accepted == [] and "no 'Question" in rejected[0]["reason"]

    copy = f"Question: {NATALIA_Q}\nAnswer: {NATALIA_A}"
    assert "copy of the seed" in task.parse_teacher_reply(copy, NATALIA)[1][0]["reason"]


# ----------------------------------------------------------------------------------------------------
# the programmatic teacher
# ----------------------------------------------------------------------------------------------------
def test_teacher_prompt_is_paper_style_and_carries_the_seed():
    prompt = teacher_prompt(NATALIA_Q, NATALIA_A, "They sold 96 clips.\n#### 96")
    assert "Question:" in prompt and "#### N" in prompt and "They sold 96 clips." in prompt
    assert prompt.count("### Original problem") == 2  # the one-shot example and the seed
    assert seed_from_prompt(prompt) == (NATALIA_Q, NATALIA_A)


def test_programmatic_teacher_writes_verified_new_problems():
    assert NAMED_TEACHERS["programmatic-gsm8k"].endswith("ProgrammaticGSM8KTeacher")
    teacher = get_teacher("programmatic-gsm8k")
    prompt = teacher_prompt(NATALIA_Q, NATALIA_A, "#### 96")
    first, second = teacher.complete([prompt, prompt])
    assert first != second  # identical prompts in one call get different variants
    assert teacher.complete([prompt])[0] == first  # deterministic
    accepted, rejected = GSM8KTask().parse_teacher_reply(first, NATALIA)
    assert rejected == [] and accepted[0]["question"] != NATALIA_Q
    assert "half as many" in accepted[0]["question"]  # same story, new numbers
    new_april = int(accepted[0]["question"].split("clips to ")[1].split()[0])
    assert accepted[0]["gold"] == str(new_april + new_april // 2)


def test_programmatic_teacher_explains_seeds_it_cannot_vary():
    reply = ProgrammaticGSM8KTeacher().reply(teacher_prompt("How many is it?", "It is 5.\n#### 5"))
    assert "cannot vary" in reply and "no calculator annotation" in reply


# ----------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------
def test_loop_summary_and_files(full_run):
    summary, _, out = full_run
    entries = summary["iterations"]
    assert [e["iteration"] for e in entries] == [0, 1, 2] and summary["complete"]
    for key in ("iteration", "train_size", "wrong", "new_examples", "test_accuracy"):
        assert all(key in e for e in entries)
    assert entries[0]["train_size"] == 4
    assert entries[1]["train_size"] == 4 + entries[0]["new_examples"] > 4
    assert entries[2]["train_size"] == entries[1]["train_size"] + entries[1]["new_examples"]
    assert json.loads((out / "summary.json").read_text())["iterations"] == entries
    log = list(read_jsonl(out / "iteration_00" / "teacher_log.jsonl"))
    assert len(log) == entries[0]["wrong_seed"] and all("reply" in r for r in log)


def test_only_seed_origin_wrong_examples_reach_the_teacher(full_run):
    summary, teacher, out = full_run
    seeds = {r["question"] for r in read_jsonl(out / "seed.jsonl")}
    asked = [seed_from_prompt(p)[0] for p in teacher.prompts]
    assert asked and set(asked) <= seeds
    # iteration 1 evaluated generated examples too (the tiny student gets them wrong) but never sent them
    first = summary["iterations"][1]
    assert first["wrong"] > first["wrong_seed"] and first["teacher_requests"] == first["wrong_seed"]
    generated = [r for r in read_jsonl(out / "iteration_01" / "train.jsonl") if r["origin"] == "generated"]
    assert generated and not {r["question"] for r in generated} & set(asked)
    for record in read_jsonl(out / "iteration_01" / "new_examples.jsonl"):
        assert record["parent"] in {" ".join(q.lower().split()) for q in seeds}


def test_interrupted_run_resumes_to_the_same_summary(full_run, tiny_student, tmp_path):
    summary, _, _ = full_run
    _, model, tokenizer = tiny_student
    out = tmp_path / "run"
    partial = run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=2, out_dir=out, student=(model, tokenizer),
                          stop_after=1, **LOOP)
    assert len(partial["iterations"]) == 2 and not partial["complete"]
    assert not (out / "iteration_02").exists()
    resumed = run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=2, out_dir=out, student=(model, tokenizer),
                          **LOOP)
    assert resumed["complete"] and resumed["iterations"] == summary["iterations"]
    with pytest.raises(ValueError, match="seed_size"):
        run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=2, out_dir=out, student=(model, tokenizer),
                    **dict(LOOP, seed_size=3))


def test_an_interrupted_fine_tuning_resumes_from_its_checkpoint(tiny_student, tmp_path, monkeypatch):
    """``run_llm2llm(save_steps=1)`` (``--save-steps 1``): killed at the 3rd update of iteration 0's fine-tuning,
    the rerun resumes from ``OUT/checkpoints/iteration_00/checkpoint-2`` and ends with the uninterrupted run's
    summary and test answers; no checkpoint is left at the end."""
    from trainer_crash import count_trainer_steps, crash_trainer_at

    _, model, tokenizer = tiny_student
    settings = dict(LOOP, epochs=2, batch_size=2, save_steps=1)  # 4 seeds, batches of 2, 2 epochs: 4 updates
    whole = run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=0, out_dir=tmp_path / "whole",
                        student=(model, tokenizer), **settings)
    crash_trainer_at(monkeypatch, 3)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=0, out_dir=out, student=(model, tokenizer),
                    **settings)
    assert [p.name for p in (out / "checkpoints" / "iteration_00").glob("checkpoint-*")] == ["checkpoint-2"]
    rerun = count_trainer_steps(monkeypatch)
    resumed = run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=0, out_dir=out,
                          student=(model, tokenizer), **settings)
    assert len(rerun) == 2  # updates 3 and 4 only: the first two came from the checkpoint
    assert resumed["complete"] and resumed["iterations"] == whole["iterations"]
    answers = [[r["output"] for r in read_jsonl(run / "iteration_00" / "test_predictions.jsonl")]
               for run in (tmp_path / "whole", out)]
    assert answers[0] == answers[1]
    assert not (out / "checkpoints").exists() and not (tmp_path / "whole" / "checkpoints").exists()


def test_a_finished_run_extends_to_more_iterations(full_run, tiny_student, tmp_path):
    summary, _, _ = full_run
    _, model, tokenizer = tiny_student
    out = tmp_path / "run"
    short = run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=1, out_dir=out, student=(model, tokenizer),
                        **LOOP)
    assert short["complete"] and short["iterations"][-1]["new_examples"] is None  # the last round is not augmented
    longer = run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=2, out_dir=out, student=(model, tokenizer),
                         **LOOP)
    assert longer["iterations"] == summary["iterations"]


def test_wrong_annotations_and_test_questions_never_reach_the_training_data(tiny_student, tmp_path):
    _, model, tokenizer = tiny_student
    test_problem = load_gsm8k("test", limit=1)[0]
    bad_reply = VALID_REPLY.replace("<<42-10=32>>32", "<<42-10=31>>31").replace("#### 32", "#### 31")
    leak_reply = f"Question: {test_problem['question']}\nAnswer: {test_problem['answer']}"
    replies = iter([bad_reply, leak_reply, VALID_REPLY, VALID_REPLY])
    teacher = RecordingTeacher(ProgrammaticGSM8KTeacher(), extra_reply=lambda prompt: next(replies))
    out = tmp_path / "run"
    summary = run_llm2llm(SmallGSM8K(), teacher, iterations=1, out_dir=out, student=(model, tokenizer), **LOOP)
    rejected = [r["reason"] for r in read_jsonl(out / "iteration_00" / "rejected.jsonl")]
    assert any("42-10 = 32, not 31" in r for r in rejected)
    assert any("test question" in r for r in rejected)
    assert any("duplicate" in r for r in rejected)  # the second copy of the valid reply
    assert summary["iterations"][0]["new_examples"] == 1
    test_keys = {" ".join(r["question"].lower().split()) for r in load_gsm8k("test")}
    trained = list(read_jsonl(out / "iteration_01" / "train.jsonl"))
    assert len(trained) == 5 and not {" ".join(r["question"].lower().split()) for r in trained} & test_keys


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------
def test_cli_llm2llm_and_gsm8k_eval(tiny_student, tmp_path, shared_data):
    from helpers.cli import main

    path, _, _ = tiny_student
    out = tmp_path / "cli_run"
    assert main(["llm2llm", "--dataset", "gsm8k", "--seed-size", "3", "--iterations", "1", "--test-size", "2",
                 "--teacher", "programmatic-gsm8k", "--out", str(out), "--student", path, "--epochs", "1",
                 "--max-new-tokens", "8", "--max-length", "320", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [set(e) >= {"iteration", "train_size", "wrong", "new_examples", "test_accuracy"}
            for e in summary["iterations"]] == [True, True]
    assert summary["iterations"][0]["test_size"] == 2

    data = tmp_path / "problems.jsonl"
    data.write_text(json.dumps({"question": "What is 2+3?", "answer": "2+3 = <<2+3=5>>5\n#### 5"}) + "\n"
                    + json.dumps({"question": "What is 4*5?", "gold": "20"}) + "\n")
    results = tmp_path / "results.json"
    assert main(["gsm8k-eval", "--data", str(data), "--model", path, "--limit", "2", "--out", str(results),
                 "--max-new-tokens", "4", "--no-progress"]) == 0
    payload = json.loads(results.read_text())
    assert 0.0 <= payload["accuracy"] <= 1.0 and len(payload["instances"]) == 2
    assert set(payload["instances"][1]) >= {"question", "gold", "prediction", "output", "correct"}
    assert payload["instances"][1]["gold"] == "20"


def test_gsm8k_file_errors_name_file_record_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "ok?", "gold": "1"}) + "\n" + json.dumps({"answer": "#### 2"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: record 2: missing or empty field 'question'"):
        read_gsm8k_file(bad)
    bad.write_text(json.dumps({"question": "ok?", "answer": "no marker"}) + "\n")
    with pytest.raises(ValueError, match="record 1: needs field 'gold'"):
        read_gsm8k_file(bad)


def test_run_folder_written_before_the_runlog_resumes(full_run, tiny_student, tmp_path, monkeypatch):
    import helpers.common.training

    summary, _, _ = full_run
    _, model, tokenizer = tiny_student
    out = tmp_path / "run"
    run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=2, out_dir=out, student=(model, tokenizer),
                stop_after=0, **LOOP)
    assert [r["key"] for r in read_jsonl(out / "run_log.jsonl")] == ["seeds", "iteration_00"]
    (out / "run_log.jsonl").unlink()  # as an older version left the folder: config.json and metrics.json only
    trained = []
    finetune = helpers.common.training.finetune
    monkeypatch.setattr(helpers.common.training, "finetune", lambda *a, **k: trained.append(1) or finetune(*a, **k))
    resumed = run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=2, out_dir=out, student=(model, tokenizer),
                          **LOOP)
    assert resumed["iterations"] == summary["iterations"] and len(trained) == 2  # iterations 1 and 2 only
    with pytest.raises(ValueError, match=r"config\.json: this run used epochs=1, now epochs=2"):
        run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=2, out_dir=out, student=(model, tokenizer),
                    **dict(LOOP, epochs=2))


def test_seed_size_larger_than_the_pool_writes_nothing(tiny_student, tmp_path):
    _, model, tokenizer = tiny_student
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"seed size 7 \(--seed-size\) is more than the 6 records"):
        run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=1, out_dir=out, student=(model, tokenizer),
                    **dict(LOOP, seed_size=7))
    assert not out.exists()  # no config.json to refuse the corrected rerun
    partial = run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=1, out_dir=out, student=(model, tokenizer),
                          stop_after=0, **LOOP)
    assert partial["iterations"][0]["train_size"] == 4


def test_test_size_larger_than_the_split_writes_nothing(tiny_student, tmp_path):
    _, model, tokenizer = tiny_student
    out = tmp_path / "run"
    n_test = len(SmallGSM8K().load("test"))
    with pytest.raises(ValueError, match=rf"test size {n_test + 1} \(--test-size\) is more than the {n_test} records"):
        run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=1, out_dir=out, student=(model, tokenizer),
                    **dict(LOOP, test_size=n_test + 1))
    assert not out.exists()


def test_classification_seed_sample_is_never_silently_smaller(shared_data):
    from helpers.llm2llm.classification import make_task

    task = make_task("trec")
    records = [{"text": f"what is {i}?", "label": "DESC"} for i in range(5)]
    assert len(task.sample_seeds(records, 5)) == 5
    with pytest.raises(ValueError, match=r"seed size 6 \(--seed-size\) is more than the 5 records of the trec"):
        task.sample_seeds(records, 6)


def test_students_predict_through_a_server_by_their_saved_folders(tiny_student, tmp_path, shared_data, capsys):
    """``backend=``: every student (and the base model, zero-shot) is saved under OUT/.served and requested by
    its folder's path; the replies become the predictions; nothing of .served is left at the end."""
    from pathlib import Path

    from test_backend import FakeOpenAIServer

    from helpers.cli import main
    from helpers.common.backend import ServerBackend

    _, model, tokenizer = tiny_student
    seen = []

    def reply(body):
        folder = Path(body["model"])
        seen.append((folder.parent.name, folder.name.rsplit("_", 1)[0], (folder / "config.json").exists()))
        return "2 + 2 = 4\n#### 4"

    out = tmp_path / "served_run"
    with FakeOpenAIServer(reply) as fake:
        summary = run_llm2llm(SmallGSM8K(), "programmatic-gsm8k", iterations=1, out_dir=out, zero_shot=True,
                              student=(model, tokenizer), backend=ServerBackend("students", base_url=fake.url),
                              **LOOP)
    assert {s[0] for s in seen} == {".served"} and all(s[2] for s in seen), "absolute folders that exist"
    labels = [s[1] for s in seen]
    assert labels == ["base"] * 2 + ["student_00"] * (2 + 4) + ["student_01"] * 2, "zero-shot, test+train, test"
    predictions = [json.loads(line) for line in (out / "iteration_01" / "test_predictions.jsonl").open()]
    assert [p["output"] for p in predictions] == ["2 + 2 = 4\n#### 4"] * 2 and predictions[0]["prediction"] == "4"
    assert summary["complete"] and not (out / ".served").exists()
    assert main(["llm2llm", "--dataset", "sst2", "--seed-size", "2", "--iterations", "0", "--out", str(tmp_path / "x"),
                 "--backend", "openai:students"]) == 2
    assert "only gsm8k predicts through a generation server" in capsys.readouterr().err


class _EchoTask:
    """A model-free task: the 'student' gets every record whose text is in ``student`` right."""

    name = "echo"

    def predict(self, student, tokenizer, records, batch_size=8, progress=False):
        return [{"output": "?", "correct": r["text"] in student} for r in records]

    def key(self, record):
        return record["text"]

    def prompt(self, record):
        return record["text"]

    def target(self, record):
        return "x"

    def teacher_prompt(self, record, output):
        return f"rewrite: {record['text']}"

    def parse_teacher_reply(self, reply, parent):
        return ([{"text": reply}], []) if reply else ([], [{"text": "", "reason": "empty reply"}])


class _ListTeacher:
    name = "list"

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def complete(self, prompts, **kwargs):
        self.prompts += prompts
        return [self.replies.pop(0) for _ in prompts]


def test_one_round_sends_only_wrong_seeds_and_verifies_replies():
    from helpers.llm2llm import llm2llm_round

    data = [{"text": "seed one", "origin": "seed"}, {"text": "seed two", "origin": "seed"},
            {"text": "seed three solved", "origin": "seed"}, {"text": "generated wrong", "origin": "generated"}]
    teacher = _ListTeacher(["a brand new question", "a test question", "seed one", "", "another fresh one"])
    done = llm2llm_round(_EchoTask(), teacher, {"seed three solved"}, None, data, {"a test question"}, iteration=1,
                         per_wrong=2)
    assert [r["text"] for r, _ in done.wrong] == ["seed one", "seed two", "generated wrong"]
    assert teacher.prompts == ["rewrite: seed one"] * 2 + ["rewrite: seed two"] * 2  # never the generated one
    assert [(a["text"], a["parent"], a["origin"], a["iteration"]) for a in done.accepted] == [
        ("a brand new question", "seed one", "generated", 1)]
    reasons = [r["reason"] for r in done.rejected]
    assert reasons[0] == "the generated question is a test question"
    assert reasons[1].startswith("duplicate") and reasons[2] == "empty reply"
    seeds_only = llm2llm_round(_EchoTask(), _ListTeacher(["q"] * 4), set(), None, data, set(), iteration=2,
                               evaluate_on="seed")
    assert len(seeds_only.evaluated) == 3 and len(seeds_only.prompts) == 3
