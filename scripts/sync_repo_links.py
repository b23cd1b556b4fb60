"""Write the course's GitHub repository (``helpers.common.config.GITHUB_REPO``) into every Colab badge, install cell and
the package URL, so that they all come from one place.

A fork sets ``GITHUB_REPO = "you/your-fork"`` in ``helpers/common/config.py`` and runs

    python scripts/sync_repo_links.py          # rewrites README.md, docs/, notebooks/, pyproject.toml
    python scripts/sync_repo_links.py --check  # exit 1 if any file is out of date (CI runs this as a test)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from helpers.common.config import GITHUB_REPO

#: The only places the repository is named: Colab badges/links, the pip install line, the project URL.
PATTERNS = [
    re.compile(r"(colab\.research\.google\.com/github/)([\w.-]+/[\w.-]+)(/blob/)"),
    re.compile(r"(course-helpers @ git\+https://github\.com/)([\w.-]+/[\w.-]+?)(\.git)?(?=[\"'\s)\\]|$)"),
    re.compile(r"(Repository = \"https://github\.com/)([\w.-]+/[\w.-]+)(\")"),
]


def files() -> list[Path]:
    return ([REPO / "README.md", REPO / "pyproject.toml"] + sorted((REPO / "docs").glob("*.md"))
            + sorted((REPO / "notebooks").rglob("*.ipynb")))


def synced(text: str, repo: str = GITHUB_REPO) -> str:
    for pattern in PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + repo + (m.group(3) or ""), text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in files():
        text = path.read_text(encoding="utf-8")
        new = synced(text)
        if new != text:
            stale.append(path.relative_to(REPO))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "out of date" if args.check else "updated"
    for path in stale:
        print(f"{verb}: {path}")
    print(f"{len(stale)} file(s) {verb}; repository {GITHUB_REPO}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
