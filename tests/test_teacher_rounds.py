"""A language-model teacher in the LLM2LLM round: few-shot prompts, reply budgets and stop strings, one verdict
per reply, per-prompt sampling seeds, and the label-agreement oracle (chapter 08, §2 of the LLM2LLM grid)."""
from __future__ import annotations

import pytest
from test_teacher import FakeEndpoint, reply

from helpers.common.generation import cut_at_stop, generate
from helpers.common.io import read_jsonl
from helpers.common.teacher import OpenAICompatibleTeacher, Teacher
from helpers.llm2llm.classification import OfflineClassificationTeacher, make_task
from helpers.llm2llm.round import Round, reason_kind, teach, verify_new_examples
from helpers.llm2llm.task import get_task

SEEDS = [{"text": "Who wrote the novel about the white whale ?", "label": "HUM", "origin": "seed"},
         {"text": "Who painted the ceiling of the chapel in Rome ?", "label": "HUM", "origin": "seed"},
         {"text": "Who was the first person to fly across the ocean ?", "label": "HUM", "origin": "seed"},
         {"text": "How many legs does a spider have ?", "label": "NUM", "origin": "seed"},
         {"text": "What is the capital of the country with the tallest tower ?", "label": "LOC", "origin": "seed"},
         {"text": "Who rephrased this one ?", "label": "HUM", "origin": "generated"}]


class Scripted(Teacher):
    """Replies from a list, records prompts and settings."""

    name = "scripted"

    def __init__(self, replies, prompt_style="few-shot"):
        super().__init__()
        self.replies, self.prompt_style, self.calls = list(replies), prompt_style, []

    def _complete(self, prompts, *, max_new_tokens, temperature, seed, system, stop=None):
        self.calls.append({"prompts": prompts, "max_new_tokens": max_new_tokens, "stop": stop, "seed": seed})
        return [self.replies.pop(0) for _ in prompts]


def test_cut_at_stop_cuts_before_the_earliest_stop_string():
    assert cut_at_stop("Text: a\nLabel: HUM\n\nText: b", ["\nText:", "\n\n"]) == "Text: a\nLabel: HUM"
    assert cut_at_stop("no stop here", ["\n\n"]) == "no stop here"
    assert cut_at_stop("abc", None) == "abc" and cut_at_stop("abc", ["", "c"]) == "ab"


def test_a_language_model_teacher_gets_few_shot_turns_from_other_seeds_with_the_label():
    task = make_task("trec")
    wrong = [(SEEDS[0], {"output": "LOC", "correct": False})]
    teacher = Scripted(["Text: Who discovered the moons of the largest planet ?\nLabel: HUM"])
    prompts, replies, accepted, rejected, outcomes = teach(task, teacher, wrong, SEEDS, set(), iteration=1,
                                                           max_new_tokens=64)
    messages = prompts[0]
    assert isinstance(messages, list) and messages[0]["role"] == "system"
    demos = [m["content"] for m in messages if m["role"] == "assistant"]
    # two other HUM *seeds* (never the wrong seed itself, never a generated example, never another label)
    assert len(demos) == 2 and all(d.endswith("Label: HUM") for d in demos)
    assert SEEDS[0]["text"] not in " ".join(demos) and "rephrased" not in " ".join(demos)
    assert {d.splitlines()[0][6:] for d in demos} <= {SEEDS[1]["text"], SEEDS[2]["text"]}
    assert SEEDS[0]["text"] in messages[-1]["content"] and "'LOC'" in messages[-1]["content"]
    assert task.demonstrations(SEEDS[0], SEEDS) == task.demonstrations(SEEDS[0], list(reversed(SEEDS)))
    # the task's reply budget and stop strings reach the teacher
    assert teacher.calls[0]["max_new_tokens"] == 64 and "\n\n" in teacher.calls[0]["stop"]
    assert [r["text"] for r in accepted] == ["Who discovered the moons of the largest planet ?"]
    assert outcomes == [{"accepted": 1, "reason": None}]


def test_the_offline_stand_in_still_gets_the_one_instruction_it_parses():
    task = make_task("trec")
    wrong = [(SEEDS[3], {"output": "HUM", "correct": False})]
    teacher = OfflineClassificationTeacher()
    prompts, replies, accepted, _, _ = teach(task, teacher, wrong, SEEDS, set(), iteration=1)
    assert prompts == [task.teacher_prompt(SEEDS[3], "HUM")]  # unchanged: the grid's offline rows stay reproducible
    assert len(accepted) == 1 and accepted[0]["label"] == "NUM"


def test_acceptance_is_counted_per_reply_not_per_repeated_block():
    task = get_task("gsm8k")
    seed = {"question": "Ann has 3 apples and buys 4 more. How many apples does she have now?",
            "answer": "Ann has 3 + 4 = <<3+4=7>>7 apples.\n#### 7", "gold": "7", "origin": "seed"}
    rambling = "Question: Ann has apples.\nAnswer: more\n" * 120  # what a 135M teacher does with a 512-token budget
    good = ("Question: Ben has 5 pears and buys 6 more pears at the shop. How many pears does he have now?\n"
            "Answer: Ben has 5 + 6 = <<5+6=11>>11 pears.\n#### 11")
    outcomes: list = []
    accepted, rejected = verify_new_examples(task, [rambling, good], [seed, seed], [seed], set(), iteration=1,
                                             outcomes=outcomes)
    assert len(rejected) == 120, "every bad block keeps its reason in the log"
    assert [o["accepted"] for o in outcomes] == [0, 1] and outcomes[0]["reason"] and outcomes[1]["reason"] is None
    done = Round([], [], [], [], ["p1", "p2"], [rambling, good], accepted, rejected, outcomes=outcomes)
    assert done.acceptance_rate == 0.5, "two replies, one usable: 50 %, not 1 in 121"
    assert sum(done.rejection_reasons().values()) == 1
    assert reason_kind("near-copy (ROUGE-L 0.97 ≥ 0.95) of: abc") == "near-copy"
    assert reason_kind("malformed: no 'Text:' line in the reply") == "malformed"


def test_http_teacher_gets_a_seed_per_prompt_the_budget_and_the_stop_strings(tmp_path):
    script = [(200, reply("Text: Who built the first bridge here ?\nLabel: HUM\n\nText: Who else ?"))] * 3
    log = tmp_path / "log.jsonl"
    with FakeEndpoint(script + script) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, log_path=log, concurrency=1)
        out = teacher.complete(["same prompt"] * 3, max_new_tokens=40, temperature=0.7, seed=10,
                               stop=["\n\n", "\nText:"])
        sending = OpenAICompatibleTeacher("m", base_url=server.url, concurrency=1, send_stop=True)
        sent = sending.complete(["same prompt"] * 3, max_new_tokens=40, temperature=0.7, seed=10,
                                stop=["\n\n", "\nText:"])
        bodies = [r["body"] for r in server.requests]
    assert sorted(b["seed"] for b in bodies[:3]) == [10, 11, 12], "identical prompts are sampled with different seeds"
    assert all(b["max_tokens"] == 40 for b in bodies)
    # by default the stop strings are applied here, not sent (transformers serve matches them across the
    # prompt's end); with send_stop=True they are sent as well — the replies are the same either way
    assert all("stop" not in b for b in bodies[:3]) and all(b["stop"] == ["\n\n", "\nText:"] for b in bodies[3:])
    assert out == sent == ["Text: Who built the first bridge here ?\nLabel: HUM"] * 3
    assert [row["reply"] for row in read_jsonl(log)] == out


def test_local_generation_stops_at_a_stop_string(embedded):
    model, tokenizer = embedded
    prompt = ["List three colours, one per line."]
    free = generate(model, tokenizer, prompt, max_new_tokens=24, progress=False)[0]
    assert "\n" in free, free
    stopped = generate(model, tokenizer, prompt, max_new_tokens=24, progress=False, stop=["\n"])[0]
    assert stopped == free.split("\n")[0].strip() and len(stopped) < len(free)
    # a stop string that the prompt's end and the reply's first word form together must not fire: the chat
    # prompt ends in "assistant\n" and the few-shot reply starts with "Text:" (transformers' stop_strings do fire)
    task = make_task("trec")
    few_shot = task.teacher_prompt(SEEDS[0], "LOC", task.demonstrations(SEEDS[0], SEEDS))
    reply = generate(model, tokenizer, [few_shot], max_new_tokens=48, progress=False, stop=task.teacher_stop)[0]
    assert reply.startswith("Text:") and len(reply) > len("Text: ") + 5, reply
    assert "\n\n" not in reply and "\nText:" not in reply


def test_label_agreement_oracle_tells_right_labels_from_wrong_ones(shared_data):
    task = make_task("trec")
    records = task.load("test", limit=200)
    right = task.label_agreement(records)
    labels = task.labels
    rotated = [dict(r, label=labels[(labels.index(r["label"]) + 1) % len(labels)]) for r in records]
    wrong = task.label_agreement(rotated)
    assert right["n"] == 200 and right["oracle_test_accuracy"] > 0.6
    assert right["agreement"] > 0.6 > 0.3 > wrong["agreement"], (right, wrong)
    assert task.label_agreement([])["agreement"] is None
    assert make_task("casehold").label_agreement(records) is None  # no oracle for multiple choice


def test_teacher_quality_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    from helpers.cli import main as cli_main

    status = cli_main(["llm2llm-teacher-quality", "--runs", str(tmp_path / "nothing"), "--out",
                       str(tmp_path / "q.json")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error: --runs") and "train.jsonl" in err and "\n" not in err
    assert not (tmp_path / "q.json").exists()


@pytest.mark.parametrize("flag", ["--teacher-max-new-tokens"])
def test_llm2llm_refuses_a_zero_teacher_budget_before_anything_loads(flag, tmp_path, capsys):
    from helpers.cli import main as cli_main

    status = cli_main(["llm2llm", "--dataset", "trec", "--seed-size", "6", "--iterations", "1", flag, "0",
                       "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error:") and flag in err
    assert not (tmp_path / "run").exists()
