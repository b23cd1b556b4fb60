"""Small file utilities: atomic writes, append-only JSONL logs, and :class:`RunLog` — the one resume mechanism
behind every resumable command.

* Writes are atomic (a temp file in the same folder, then a rename) and the file's mode follows the umask like
  any other file a program creates (``tempfile`` alone would leave it ``-rw-------``).
* Appends are crash-safe: a line is written in one call, flushed and fsync'ed; before appending, a torn last
  line (a process killed mid-write) is cut back to the last newline, so a new line never glues onto it.
* Reading is tolerant of exactly that: a torn last line is skipped with one warning; any other bad line raises
  a :class:`ValueError` naming the file and the line.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping


def umask_mode(base: int = 0o666) -> int:
    """``base`` with the process's umask applied: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def follow_umask(fd: int) -> None:
    """Give the open file ``fd`` (a ``tempfile.mkstemp`` file, created ``-rw-------``) the umask's mode."""
    if hasattr(os, "fchmod"):  # POSIX; on Windows the mode bits do not apply
        os.fchmod(fd, umask_mode())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then rename); the mode follows the
    umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        follow_umask(fd)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as JSON and write it atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """``json.loads`` of a file; a missing file, non-UTF-8 bytes or bad JSON raise an error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what}")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, expected a {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data.decode("utf-8"))
        return True
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def repair_tail(path: str | os.PathLike) -> bytes | None:
    """Make ``path`` end with a newline before something is appended: a torn last line (not valid JSON) is cut
    back to the last newline and returned; a complete last record that only lacks its newline gets one."""
    path = Path(path)
    try:
        handle = open(path, "rb+")
    except FileNotFoundError:
        return None
    with handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return None
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return None
        cut, pos = 0, size
        while pos > 0:  # find the last newline, reading backwards in blocks
            start = max(0, pos - 65536)
            handle.seek(start)
            index = handle.read(pos - start).rfind(b"\n")
            if index >= 0:
                cut = start + index + 1
                break
            pos = start
        handle.seek(cut)
        tail = handle.read()
        if tail.strip() and _is_json(tail):
            handle.seek(size)
            handle.write(b"\n")
            torn = None
        else:
            handle.truncate(cut)
            torn = tail
        handle.flush()
        os.fsync(handle.fileno())
    return torn


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append one JSON record to a log, flushed to disk, so an interruption loses at most that line; a torn last
    line left by an earlier interruption is cut first (:func:`repair_tail`), so the new line stands alone."""
    path = Path(path)
    if _append_line(path, record) is not None:
        _warn(f"{path}: cut an incomplete last line (an interrupted write) before appending")


def _append_line(path: Path, record: Any) -> bytes | None:
    """Append ``record`` as one JSON line in a single write, flushed and fsync'ed, after cutting a torn last line
    (returned, or ``None``): the one crash-safe append behind :func:`append_jsonl` and :meth:`RunLog.append`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = repair_tail(path)
    with open(path, "ab") as handle:
        handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    return torn


def _parse_jsonl(path: Path) -> tuple[list[Any], bool]:
    """``(records, torn)``: every complete record of a JSONL file, and whether its last line is torn."""
    if not path.exists():
        return [], False
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, expected a JSONL file")
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if number == len(lines):  # no newline after it: an interrupted write
                return records, True
            why = f"not UTF-8 text (byte {err.start})" if isinstance(err, UnicodeDecodeError) else \
                f"not valid JSON ({err.msg})"
            raise ValueError(f"{path}: line {number} is {why}") from err
    return records, False


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Read a JSONL file; a truncated last line (an interrupted write) is skipped, other bad lines raise a
    ``ValueError`` naming the file and the line."""
    records, _ = _parse_jsonl(Path(path))
    yield from records


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """Write records as JSONL atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ----------------------------------------------------------------------------------------------------
# RunLog: the resume mechanism of every resumable command
# ----------------------------------------------------------------------------------------------------
def settings_hash(settings: Any) -> str:
    """A short stable hash of JSON-able ``settings`` (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class RunLog:
    """An append-only JSONL log of finished units of work, keyed by a hash of the settings that decide them.

    ``log = RunLog.open(path, settings)`` reads the log (``log.hash`` is the settings hash); ``log.done()``
    gives the records written under that hash, by their ``key`` (the unit: a record id, a configuration, a
    chunk, a method); ``log.append(record, key=...)`` adds one, stamped ``"run": hash``, crash-safe (one
    write, flushed and fsync'ed). Runs with other settings may share the file: their records are kept and
    never reused (:meth:`other_runs` lists their hashes). A torn last line (a process killed mid-write) is
    skipped with one warning and cut back to the last newline before the next append, so the log stays
    usable; any other bad line raises a ``ValueError`` naming the file and the line.
    """

    #: the field of each record that carries the settings hash
    FIELD = "run"

    def __init__(self, path: str | os.PathLike, settings: Any, *, adopt_unstamped: bool = False):
        """``adopt_unstamped``: records without a ``"run"`` field (written before this class existed) count as
        this run's — only for logs whose keys already identify the settings (a hash of settings and content)."""
        self.path = Path(path)
        self.settings = settings
        self.hash = settings_hash(settings)
        self.adopt_unstamped = adopt_unstamped
        self._records, self._torn = _parse_jsonl(self.path)
        self._done = {str(r.get("key")): r for r in self._records if self._mine(r)}
        if self._torn:
            _warn(f"{self.path}: the last line is incomplete (an interrupted write); it is skipped and will be "
                  "cut before the next append")

    @classmethod
    def open(cls, path: str | os.PathLike, settings: Any, **options) -> "RunLog":
        """The log at ``path`` for the run with these ``settings`` (the file need not exist yet)."""
        return cls(path, settings, **options)

    def _mine(self, record) -> bool:
        if not isinstance(record, Mapping):
            return False
        run = record.get(self.FIELD)
        return run == self.hash or (run is None and self.adopt_unstamped)

    def records(self) -> list[dict]:
        """Every complete record of the file, of every run, in order."""
        return list(self._records)

    def done(self) -> dict[str, dict]:
        """This run's records by ``key`` (the last one wins when a key was logged twice)."""
        return dict(self._done)

    def get(self, key: str) -> dict | None:
        return self._done.get(str(key))

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def other_runs(self) -> set[str]:
        """Hashes of the other runs logged in this file."""
        return {r.get(self.FIELD) for r in self._records if isinstance(r, Mapping)
                and r.get(self.FIELD) not in (None, self.hash)}

    def append(self, record: Mapping, key: str | None = None) -> dict:
        """Append ``record`` (with ``"run"`` and, when given, ``"key"`` in front) and return what was written."""
        skip = {self.FIELD, "key"} if key is not None else {self.FIELD}
        row = {self.FIELD: self.hash, **({"key": str(key)} if key is not None else {}),
               **{k: v for k, v in record.items() if k not in skip}}
        _append_line(self.path, row)  # a torn last line (already warned about) goes before the new one
        self._torn = False
        written = json.loads(json.dumps(row, ensure_ascii=False))  # as a later read gives it back (tuples as lists…)
        self._records.append(written)
        self._done[str(written.get("key"))] = written
        return written

    def __repr__(self) -> str:
        return f"RunLog({str(self.path)!r}, hash={self.hash!r}, done={len(self.done())})"
