"""Which process am I? Rank helpers for multi-process launches (``torchrun``, ``accelerate launch``).

Both launchers export ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; a plain ``python`` run has none of them and
is rank 0 of a world of 1. Commands that train use these to write results, logs and students from rank 0 only
(:func:`is_main_process`), while every rank trains its shard of each batch through the Hugging Face
``Trainer`` (:mod:`helpers.common.trainer_engine`), which synchronises the gradients.

    torchrun --nproc_per_node 2 -m helpers llm2llm --dataset trec ...
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime
import os


def world_size() -> int:
    """Number of processes of this launch (1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """True on rank 0: the one process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a one-process run or before the process group exists)."""
    if world_size() == 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def init_process_group() -> None:
    """Start the process group of a multi-process launch if nobody has (gloo on CPU, nccl on CUDA); a no-op
    in a one-process run. The ``Trainer`` does the same when it is built; commands call this first so that a
    :func:`barrier` before any training works. Collectives wait up to ``HELPERS_DIST_TIMEOUT_S`` seconds
    (default 7200; torch's own default is 1800): a long teacher round on rank 0 must not time the others out."""
    if world_size() == 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # rank 0 alone runs a round's teacher while the others wait (on_main_only): allow a long wait
        timeout = float(os.environ.get("HELPERS_DIST_TIMEOUT_S", "7200"))
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))


def broadcast_from_main(obj):
    """Rank 0's ``obj`` on every rank (any picklable object; ``obj`` itself in a one-process run)."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    init_process_group()
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj) -> list:
    """Every rank's ``obj`` (any picklable object), in rank order, on every rank (``[obj]`` in one process)."""
    if world_size() == 1:
        return [obj]
    import torch.distributed as dist

    init_process_group()
    box = [None] * world_size()
    dist.all_gather_object(box, obj)
    return box


def _rank_copy(target, copy):
    """``target`` on rank 0; on the other ranks ``copy(private)`` fills a private temporary folder (removed at
    exit) and its ``target.name`` is returned. Rank 0 waits until every copy is made before it writes anything."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    target = Path(target)
    init_process_group()
    if is_main_process():
        barrier()
        return target
    private = Path(tempfile.mkdtemp(prefix=f"helpers-rank{rank()}-"))
    atexit.register(shutil.rmtree, private, True)
    copy(private)
    barrier()
    return private / target.name


def rank_folder(out_dir):
    """Where this rank writes a run folder: ``out_dir`` itself on rank 0; on the other ranks a private copy of
    it (what a resumed run has so far) in a temporary folder, removed at exit. Every rank then runs the same
    code on the same files, only rank 0's land in ``out_dir``, and no two processes write the same file. Rank 0
    waits until the copies are made before it writes anything."""
    import shutil
    from pathlib import Path

    out_dir = Path(out_dir)

    def copy(private):
        if out_dir.is_dir():
            # not the served models or the fine-tuning checkpoints (every rank resumes rank 0's, in out_dir)
            shutil.copytree(out_dir, private / out_dir.name, ignore=shutil.ignore_patterns(".served", "checkpoints"))

    return _rank_copy(out_dir, copy)


def rank_file(path, *companions):
    """Where this rank keeps an output file: ``path`` itself on rank 0; on the other ranks a private copy (what a
    resumed run has so far) in a temporary folder, removed at exit — the one-file version of :func:`rank_folder`,
    for commands whose output is a file and a log (``safeedit-eval``, ``safeedit-table``). ``companions``: files
    next to ``path`` (its resume log) copied into the same private folder, so they keep their place beside it."""
    import shutil
    from pathlib import Path

    def copy(private):
        for source in map(Path, (path, *companions)):
            if source.is_file():
                shutil.copy2(source, private / source.name)

    return _rank_copy(path, copy)


# -- sharded batches: generation and label scoring split over the ranks ------------------------------------------

class Sharding:
    """What one :func:`sharded_work` block split: ``per_rank[r]`` = items (prompts) rank ``r`` computed."""

    def __init__(self):
        self.per_rank = [0] * world_size()


_SHARDING: contextvars.ContextVar = contextvars.ContextVar("helpers_sharding", default=None)


@contextlib.contextmanager
def sharded_work():
    """Inside this block, when every rank of a multi-process launch makes the *same* call with the same inputs,
    :func:`helpers.common.generation.generate` (greedy) and :func:`helpers.llm2llm.label_scoring.score_labels`
    split their batches over the ranks and exchange the results, so every rank returns the whole output.

    The batches are the ones a single process makes (prompts sorted by length over the *whole* call, then cut
    into ``batch_size`` pieces); batch ``k`` runs on rank ``k % world_size``. Every prompt is therefore computed
    in exactly the batch, with exactly the padding, it has in one process — the outputs equal a one-process
    run's (bit for bit at equal thread counts). Sampled generation is not split (its random stream runs through
    the batches in order), and a call inside :func:`on_main_only` runs whole on rank 0. Yields a
    :class:`Sharding` that counts what each rank computed. A no-op in a one-process run."""
    sharding = Sharding()
    if world_size() == 1:
        yield sharding
        return
    init_process_group()
    token = _SHARDING.set(sharding)
    try:
        yield sharding
    finally:
        _SHARDING.reset(token)


def my_batches(batches: list, *, split: bool = True) -> list:
    """The batches this rank computes: every ``world_size``-th from its rank inside :func:`sharded_work`
    (``split=False``: all of them, e.g. for sampling), all of them elsewhere. Pair with :func:`gather_shards`."""
    if _SHARDING.get() is None or not split:
        return batches
    return batches[rank()::world_size()]


def gather_shards(local: dict, *, split: bool = True) -> dict:
    """``{index: output}`` of every rank merged (inside :func:`sharded_work`; ``local`` itself elsewhere or with
    ``split=False``). Every rank must call it, with the same ``split``, once per :func:`my_batches`."""
    sharding = _SHARDING.get()
    if sharding is None or not split:
        return local
    merged: dict = {}
    for r, part in enumerate(all_gather(local)):
        sharding.per_rank[r] += len(part)
        merged.update(part)
    return merged


def on_main_only(compute):
    """``compute()`` run on rank 0 alone inside :func:`sharded_work` and its result sent to every rank (a
    teacher's requests, a generation server's: one set of calls, not one per rank); ``compute()`` itself
    elsewhere. Inside, nothing is split (rank 0 computes everything)."""
    if _SHARDING.get() is None:
        return compute()
    token = _SHARDING.set(None)
    try:
        result = compute() if is_main_process() else None
    finally:
        _SHARDING.reset(token)
    return broadcast_from_main(result)
