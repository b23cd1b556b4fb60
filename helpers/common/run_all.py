"""``python -m helpers run-all``: execute every chapter notebook (small mode by default) and summarise.

Executed copies go to ``results/_runs/`` (the committed notebooks stay as they are); each chapter records
its key numbers in ``results/chapters/*.json``; this command gathers them into ``results/summary.md``.
A failing notebook is reported and the run goes on with the next one; the exit code says whether all passed.
"""
from __future__ import annotations

import time
from pathlib import Path

from .config import REPO_ROOT, get_scale, results_dir
from .io import atomic_write_text
from .results import hardware, load_chapters


def add_arguments(parser) -> None:
    parser.add_argument("--notebooks", nargs="*", default=None,
                        help="notebook files to run (default: every notebooks/NN_*.ipynb)")
    parser.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")


def run_notebook(path: Path, out_dir: Path, timeout: int) -> tuple[bool, float, str]:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    ok, message = True, ""
    try:
        client.execute()
    except CellExecutionError as err:
        ok, message = False, str(err).strip().splitlines()[-1][:300]
    nbformat.write(nb, out_dir / path.name)
    return ok, time.perf_counter() - start, message


def summarise(rows: list[tuple[str, bool, float, str]]) -> str:
    lines = [f"# Results summary ({get_scale()} mode)", "", f"Hardware: {hardware()}. Written by `python -m helpers run-all`.", ""]
    if rows:
        lines += ["| notebook | status | minutes |", "|---|---|---|"]
        lines += [f"| {name} | {'ok' if ok else 'FAILED: ' + msg} | {secs / 60:.1f} |" for name, ok, secs, msg in rows]
        lines.append("")
    for chapter in load_chapters():
        lines.append(f"## {chapter['chapter']}  ({chapter['scale']}, {chapter['hardware']}, {chapter['date']})")
        lines.append("")
        for key, value in chapter["numbers"].items():
            shown = f"{value:.3g}" if isinstance(value, float) else value
            lines.append(f"- {key}: {shown}")
        if chapter.get("notes"):
            lines += ["", chapter["notes"]]
        lines.append("")
    return "\n".join(lines)


def main(args) -> int:
    from .checks import at_least

    at_least(args, 1, "timeout")
    notebooks = [Path(p) for p in args.notebooks] if args.notebooks else sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in notebooks:
        if not path.is_file():
            raise SystemExit(f"--notebooks {path}: no such notebook")
    out_dir = results_dir() / "_runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in notebooks:
        print(f"running {path.name} ...", flush=True)
        ok, seconds, message = run_notebook(path, out_dir, args.timeout)
        print(f"  {'ok' if ok else 'FAILED'} in {seconds / 60:.1f} min {message}", flush=True)
        rows.append((path.name, ok, seconds, message))
    summary = atomic_write_text(results_dir() / "summary.md", summarise(rows))
    print(f"wrote {summary}")
    return 0 if all(ok for _, ok, _, _ in rows) else 1
