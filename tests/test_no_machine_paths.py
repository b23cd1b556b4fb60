"""Nothing committed carries this machine's absolute paths (saved notebook outputs, results, docs, package data)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("notebooks", "results", "docs", "README.md", "helpers/resources")


def _patterns() -> list[str]:
    parent, home = str(REPO.parent.resolve()), str(Path.home().resolve())
    generic = [r"(?<![\w.~])/tmp/", r"(?<![\w.~])/Users/", r"(?<![\w.~])/home/\w", r"(?<![\w.~])/root/",
               r"(?<![\w.~])/content/drive/", r"(?<![\w])[A-Za-z]:\\\\", r"(?<![\w.~])/\S*/site-packages/"]
    return [re.escape(parent + "/"), re.escape(home + "/"), *generic]


def test_no_absolute_machine_path_in_committed_outputs():
    files = subprocess.run(["git", "ls-files", *SCANNED], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    assert files, "nothing to scan"
    pattern = re.compile("|".join(_patterns()))
    hits = []
    for name in files:
        path = REPO / name
        if path.suffix in (".png", ".jpg") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            match = pattern.search(line)
            if match:
                hits.append(f"{name}:{number}: …{line[max(0, match.start() - 40):match.end() + 40]}…")
    assert not hits, "absolute machine paths (print paths with helpers.common.config.display_path):\n" + "\n".join(hits[:20])


def test_display_path_is_relative(tmp_path, monkeypatch):
    from helpers.common.config import display_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    assert display_path(tmp_path / "results") == "results"
    assert display_path(Path.home() / ".cache" / "helpers") == "~/.cache/helpers"
    assert not display_path(tmp_path.parent / "elsewhere").startswith("/")
