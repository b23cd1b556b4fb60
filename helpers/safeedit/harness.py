"""The SafeEdit evaluation harness every detoxification method plugs into (chapters 02–06).

For each record the harness generates replies to the five inputs (``SAFEEDIT_INPUTS``: the adversarial
prompt → DS, and the four generalisation inputs → DG_onlyQ, DG_otherA, DG_otherQ, DG_otherAQ), judges
them, and aggregates the metrics. A *method* is a :class:`Method`:

* a **global** method (``per_instance = False``; vanilla, SFT, DPO, RLHF, Ext-Sub) returns a model once
  from :meth:`Method.prepare`; replies are then generated in batches *across* records;
* a **per-instance** editor (``per_instance = True``; DINM, MEND) edits the model for one record in
  :meth:`Method.edit` and must undo it in :meth:`Method.restore`; the harness checks the parameter
  checksum before and after every edit and raises if the model was not restored exactly.

``python -m helpers safeedit-eval --data FILE --method vanilla --model NAME --limit N --out results.json``
runs it from the command line; methods that leave the weights alone (vanilla, self-reminder) can generate
through an OpenAI-compatible server instead: ``--backend openai:MODEL`` (:mod:`helpers.common.backend`).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from .data import SAFEEDIT_INPUTS, SafeEditFormatError, validate_safeedit
from .metrics import METRIC_KEYS, aggregate_safety, record_fluency


class Method:
    """A detoxification method. Override what applies; the defaults leave the model untouched."""

    name = "vanilla"
    per_instance = False
    #: a method that works by prompting (Self-Reminder) also wraps the general-performance prompts (KQA, Csum,
    #: over-refusal) with :meth:`format_input`; methods that change weights are measured on plain prompts
    wraps_general_prompts = False
    #: under a multi-process launch the harness gives each rank its share of the records (per-instance) or of
    #: the inputs (global); a method whose edits depend on earlier records (DINM with ``locate="first"``) says no
    shardable = True

    def prepare(self, model, tokenizer, train_records: Sequence[dict] | None = None):
        """Global methods train here and return the model to evaluate (may be a new object)."""
        return model

    def edit(self, model, tokenizer, record: dict) -> dict:
        """Per-instance methods edit ``model`` in place for ``record``; return info to store per instance."""
        return {}

    def restore(self, model) -> None:
        """Undo :meth:`edit` exactly."""

    def format_input(self, text: str):
        """How an evaluation input is sent to the model (a string or chat messages)."""
        return text

    def resumed(self, info: dict) -> None:
        """A per-instance method's record was taken from the harness log instead of edited again; ``info`` is
        what :meth:`edit` returned for it then (e.g. DINM remembers the first record's layer)."""


class VanillaMethod(Method):
    """The unedited model."""

    name = "vanilla"


def record_inputs(record: dict, source: str = "<records>") -> dict[str, str]:
    """The five evaluation inputs of a record, keyed by metric; a clear error if one is missing or empty."""
    inputs = {}
    for key, path in SAFEEDIT_INPUTS.items():
        value: Any = record
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str) or not value.strip():
            state = "missing" if value is None else "empty" if isinstance(value, str) else f"a {type(value).__name__}"
            raise SafeEditFormatError(
                f"{source}: record id {record.get('id')}: evaluation input {'/'.join(path)!r} ({key}) is {state}; "
                "evaluation needs all five inputs (official test/validation records or a built split have them)"
            )
        inputs[key] = value
    return inputs


def length_buckets(lengths: Sequence[int], batch_size: int, pad_budget: int | None) -> list[list[int]]:
    """Group indices into batches of similar length: sorted by length, a batch closes when it is full or when
    adding the next (longer) input would add more than ``pad_budget`` padding tokens to it.

    ``pad_budget`` trades padding against the fixed cost of one more batch (its decoding steps); ``None``
    means full batches only (best where padding is nearly free, e.g. on a GPU).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if (current is None or len(current) >= batch_size
                or (pad_budget is not None and len(current) * (lengths[i] - lengths[current[-1]]) > pad_budget)):
            batches.append([i])
        else:
            current.append(i)
    return batches


def generate_bucketed(model, tokenizer, prompts: Sequence, *, max_new_tokens: int = 64, batch_size: int = 16,
                      max_input_tokens: int | None = 1024, pad_budget: int | str | None = "auto",
                      progress: bool = False, desc: str = "generating") -> list[str]:
    """:func:`helpers.common.generation.generate` over length buckets (:func:`length_buckets`).

    SafeEdit inputs range from a 40-token question to a 1,000-token jailbreak prompt; padding them into one
    batch makes the short ones cost as much as the long ones. ``pad_budget="auto"``: 8 × ``max_new_tokens``
    padding tokens per batch on a CPU (where a prompt token costs about as much as a tenth of a decoding
    step), full batches on a GPU.
    """
    from tqdm.auto import tqdm

    from ..common.generation import chat_prompt, generate, generation_engine

    prompts = list(prompts)
    if not prompts:
        return []
    if getattr(model, "is_server_backend", False):  # an OpenAI-compatible server batches by itself
        return model.generate(prompts, max_new_tokens=max_new_tokens, progress=progress, desc=desc)
    if generation_engine(model, n_batches=2) == "continuous":  # no padding to budget: one call, the scheduler batches
        return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        max_input_tokens=max_input_tokens, progress=progress, desc=desc, engine="continuous")
    if pad_budget == "auto":
        device = next(model.parameters()).device
        pad_budget = 8 * max_new_tokens if device.type == "cpu" else None
    lengths = [len(ids) for ids in tokenizer([chat_prompt(tokenizer, p) for p in prompts], add_special_tokens=False,
                                             truncation=max_input_tokens is not None,
                                             max_length=max_input_tokens)["input_ids"]]
    outputs: list[str] = [""] * len(prompts)
    for batch in tqdm(length_buckets(lengths, batch_size, pad_budget), desc=desc, disable=not progress, leave=False):
        replies = generate(model, tokenizer, [prompts[i] for i in batch], max_new_tokens=max_new_tokens,
                           batch_size=len(batch), max_input_tokens=max_input_tokens, progress=False)
        for i, reply in zip(batch, replies):
            outputs[i] = reply
    return outputs


def _call_general(general: Callable, model, tokenizer, records: Sequence[dict], method: "Method") -> dict:
    """Run a general-performance callback; one that takes ``extra_prompts`` also gets the records'
    ``knowledge constrain`` prompts (benign requests the over-refusal metric asks too), and one that takes
    ``format_input`` gets the method's when the method works by prompting (``wraps_general_prompts``)."""
    import inspect

    try:
        params = inspect.signature(general).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        params = {}
    kwargs = {}
    if "extra_prompts" in params:
        kwargs["extra_prompts"] = [
            r["knowledge constrain"]["prompt"] for r in records if isinstance(r.get("knowledge constrain"), dict)
            and isinstance(r["knowledge constrain"].get("prompt"), str) and r["knowledge constrain"]["prompt"].strip()]
    if "format_input" in params and getattr(method, "wraps_general_prompts", False):
        kwargs["format_input"] = method.format_input
    return general(model, tokenizer, **kwargs)


def evaluate_safeedit(
    method: Method,
    records: Sequence[dict],
    judge,
    model,
    tokenizer,
    *,
    train_records: Sequence[dict] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    max_input_tokens: int | None = 1024,
    pad_budget: int | str | None = "auto",
    general: Callable[[Any, Any], dict] | None = None,
    general_instances: int = 1,
    log_path=None,
    check_restore: bool = True,
    progress: bool = True,
    source: str = "<records>",
    also_judge=None,
    allow_judge_overlap: bool = False,
    shard: bool = True,
) -> dict:
    """Evaluate ``method`` on SafeEdit ``records`` with ``judge``; see the module docstring.

    ``judge`` is a :class:`helpers.safeedit.judge.Judge` or a judge name (``"probe"``, ``"keyword"``, …). A global
    method's replies are generated in one pass over all records' inputs, in batches of similar length
    (:func:`generate_bucketed`, at most ``batch_size`` inputs and ``pad_budget`` padding tokens per batch);
    identical inputs are generated once. A per-instance method's five inputs per record are bucketed the same
    way. Inputs longer than ``max_input_tokens`` keep their last tokens (where the question usually is).

    ``general(model, tokenizer) -> {metric: value}`` (e.g. KQA/Csum) runs once on a global method's model,
    and after each of the first ``general_instances`` edits of a per-instance method (averaged).
    ``log_path``: a per-instance method appends each finished record (replies, edit info, timing, general
    results) to this JSONL log; a rerun with the same method options and generation settings takes those
    records from the log and edits only the rest (resumable).
    ``also_judge``: a second judge (e.g. ``"keyword"`` beside the probe); its DS/DG scores go to
    ``by_judge`` and its labels to each instance's ``labels_by_judge``. A judge trained on a text of the
    evaluated records (:func:`helpers.safeedit.judge_data.check_judge_overlap`) is refused unless ``allow_judge_overlap``.
    ``general`` callbacks that take ``extra_prompts`` get the records' ``knowledge constrain`` prompts (the
    over-refusal metric asks them too).
    ``shard``: under ``torchrun``/``accelerate launch`` (and a ``shardable`` method) rank r edits records r,
    r + W, r + 2W, … (a global method: generates that share of the inputs); after each round of W records the
    ranks exchange their results, so every rank returns the same full result (each instance names its
    ``rank``) and every rank's log holds every record. Without a launcher, or ``shard=False``, one process does
    everything.
    Returns ``{"method", "judge", "judge_info", "aggregate", "by_judge", "judges_info", "instances",
    "timings"}``; ``aggregate`` has DS, the four DG scores, DG_avg (by the main judge), fluency (the
    reference's: n-gram entropy over all five responses of a record, averaged over records) and whatever
    ``general`` returned.
    """
    from tqdm.auto import tqdm

    from ..common.models import parameter_checksum

    records = list(records)
    if not records:
        raise ValueError("evaluate_safeedit needs at least one record")
    from .judge import get_judge
    from .judge_data import check_judge_overlap, judge_info

    judges = [get_judge(j) if isinstance(j, str) else j for j in (judge, also_judge) if j is not None]
    judge = judges[0]
    validate_safeedit(records, source=source)
    for j in judges:
        check_judge_overlap(j, records, allow=allow_judge_overlap, source=source)
    inputs = [record_inputs(r, source) for r in records]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    model = method.prepare(model, tokenizer, train_records)
    timings["prepare_seconds"] = time.perf_counter() - start

    instances = [{"id": r["id"], "responses": {}, "labels": {}} for r in records]
    general_results: list[dict] = []
    start = time.perf_counter()
    from ..common.distributed import all_gather, broadcast_from_main, rank, world_size

    # the ranks that split the work (1 when not sharded: then every process does everything alone)
    ranks, me = (world_size(), rank()) if shard and method.shardable else (1, 0)

    def exchange(obj) -> list:
        return all_gather(obj) if ranks > 1 else [obj]

    if not method.per_instance:
        flat = [(i, key, text) for i, inp in enumerate(inputs) for key, text in inp.items()]
        unique = list(dict.fromkeys(text for _, _, text in flat))
        mine = unique[me::ranks]
        replies = generate_bucketed(model, tokenizer, [method.format_input(t) for t in mine],
                                    max_new_tokens=max_new_tokens, batch_size=batch_size,
                                    progress=progress and me == 0, max_input_tokens=max_input_tokens,
                                    pad_budget=pad_budget, desc=f"{method.name}: generating") if mine else []
        reply_of = {}
        for texts, got in exchange((mine, replies)):
            reply_of.update(zip(texts, got))
        for i, key, text in flat:
            instances[i]["responses"][key] = reply_of[text]
        if general is not None:  # one process measures the general performance, the others receive it
            result = _call_general(general, model, tokenizer, records, method) if me == 0 else None
            general_results.append(broadcast_from_main(result) if ranks > 1 else result)
    else:
        log = _instance_log(log_path, model, method, max_new_tokens, max_input_tokens, general_instances)
        logged = {} if log is None else _logged_instances(log, model, method, records, max_new_tokens,
                                                          max_input_tokens, general_instances)
        general_of: dict[int, dict] = {}

        def one(i: int):
            """Record ``i`` edited, answered and restored: ``(instance fields, general or None, fresh)``."""
            record, inp = records[i], inputs[i]
            row = logged.get(str(record["id"]))
            if row is not None and (row.get("general") is not None or general is None or i >= general_instances):
                return row["instance"], row.get("general") if i < general_instances else None, False
            before = parameter_checksum(model) if check_restore else None
            t0 = time.perf_counter()
            info = method.edit(model, tokenizer, record) or {}
            edit_seconds = time.perf_counter() - t0
            result = None
            try:
                keys = list(inp)
                replies = generate_bucketed(model, tokenizer, [method.format_input(inp[k]) for k in keys],
                                            max_new_tokens=max_new_tokens, batch_size=batch_size,
                                            max_input_tokens=max_input_tokens, pad_budget=pad_budget)
                if general is not None and i < general_instances:
                    result = _call_general(general, model, tokenizer, [record], method)
            finally:
                method.restore(model)
            if check_restore and parameter_checksum(model) != before:
                raise RuntimeError(f"{method.name}: the model was not restored exactly after record id {record['id']}")
            fields = {"responses": dict(zip(keys, replies)), **info, "edit_seconds": edit_seconds}
            if ranks > 1:
                fields["rank"] = me
            return fields, result, True

        for start in tqdm(range(0, len(records), ranks), desc=f"{method.name}: editing",
                          disable=not progress or me != 0, unit="record" if ranks == 1 else f"{ranks} records"):
            i = start + me
            mine = one(i) if i < len(records) else None
            for r, got in enumerate(exchange(mine)):
                if got is None:
                    continue
                j, (fields, result, fresh) = start + r, got
                instances[j].update(fields)
                if result is not None:
                    general_of[j] = result
                if not fresh:
                    method.resumed(fields)
                elif log is not None:
                    log.append({"id": str(records[j]["id"]),
                                "instance": {k: v for k, v in instances[j].items() if k != "labels"},
                                "general": result},
                               key=_instance_log_key(model, method, records[j], max_new_tokens, max_input_tokens,
                                                     general_instances))
        general_results = [general_of[j] for j in sorted(general_of)]
    timings["generation_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    flat = [(i, key, inst["responses"][key]) for i, inst in enumerate(instances) for key in METRIC_KEYS]
    by_judge = {}
    for j in judges:
        labels = j.predict([text for _, _, text in flat])
        for (i, key, _), label in zip(flat, labels):
            if j is judge:
                instances[i]["labels"][key] = label
            else:
                instances[i].setdefault("labels_by_judge", {}).setdefault(j.name, {})[key] = label
        by_judge[j.name] = aggregate_safety({k: [lab for (_, key, _), lab in zip(flat, labels) if key == k]
                                             for k in METRIC_KEYS})
    timings["judge_seconds"] = time.perf_counter() - start
    timings["records_per_minute"] = 60.0 * len(records) / max(1e-9, sum(timings.values()))

    aggregate = dict(by_judge[judge.name])
    aggregate["fluency"] = record_fluency([inst["responses"] for inst in instances])
    if general_results:
        for key in general_results[0]:
            aggregate[key] = sum(g[key] for g in general_results) / len(general_results)
    if method.per_instance:
        timings["mean_edit_seconds"] = sum(x["edit_seconds"] for x in instances) / len(instances)
    infos = {j.name: judge_info(j, records) for j in judges}
    return {
        "method": method.name,
        "judge": judge.name,
        "judge_info": infos[judge.name],
        "n_records": len(records),
        "aggregate": aggregate,
        "by_judge": by_judge,
        "judges_info": infos,
        "instances": instances,
        "timings": timings,
    }


def _instance_log_settings(model, method: Method, max_new_tokens: int, max_input_tokens,
                           general_instances: int) -> dict:
    """What a logged record must have been evaluated with to be reused: model, method options, generation
    settings (the :class:`helpers.common.io.RunLog` hash of the per-instance log)."""
    options = method.options() if hasattr(method, "options") else {}
    model_name = getattr(model, "name_or_path_for_course", None) or getattr(model.config, "_name_or_path", "")
    return {"model": model_name, "method": method.name, "options": options, "max_new_tokens": max_new_tokens,
            "max_input_tokens": max_input_tokens, "general_instances": general_instances}


def _instance_log_key(model, method: Method, record: dict, max_new_tokens: int, max_input_tokens,
                      general_instances: int) -> str:
    """A logged record's key: a hash of the settings and the record itself (an edited record is redone);
    computed as before the run hash existed, so older logs still resume."""
    import hashlib
    import json

    text = json.dumps({**_instance_log_settings(model, method, max_new_tokens, max_input_tokens, general_instances),
                       "record": record}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _instance_log(log_path, model, method: Method, max_new_tokens: int, max_input_tokens, general_instances: int):
    """The per-instance :class:`helpers.common.io.RunLog` (``None`` without ``log_path``). Records logged before the
    run hash existed are adopted: their key already hashes the same settings."""
    if log_path is None:
        return None
    from ..common.io import RunLog

    return RunLog.open(log_path, _instance_log_settings(model, method, max_new_tokens, max_input_tokens,
                                                        general_instances), adopt_unstamped=True)


def _logged_instances(log, model, method: Method, records: Sequence[dict], max_new_tokens: int, max_input_tokens,
                      general_instances: int) -> dict[str, dict]:
    """Rows of the harness log written with the same settings for these records, by record id."""
    done = log.done()
    wanted = {_instance_log_key(model, method, r, max_new_tokens, max_input_tokens, general_instances): str(r["id"])
              for r in records}
    return {record_id: done[key] for key, record_id in wanted.items() if key in done}
