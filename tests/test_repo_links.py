"""The Colab badges, the install cells and the project URL all name helpers.common.config.GITHUB_REPO."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import sync_repo_links  # noqa: E402


def test_every_link_names_the_configured_repository():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "sync_repo_links.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_a_fork_rewrites_badges_and_install_cells():
    text = ('[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]'
            '(https://colab.research.google.com/github/llm-course/detox-llm2llm/blob/main/notebooks/00_setup.ipynb)\n'
            '"course-helpers @ git+https://github.com/llm-course/detox-llm2llm"], check=True)\n'
            'see https://github.com/zjunlp/EasyEdit for the reference')
    out = sync_repo_links.synced(text, "you/fork")
    assert "colab.research.google.com/github/you/fork/blob/main/notebooks/00_setup.ipynb" in out
    assert '"course-helpers @ git+https://github.com/you/fork"' in out
    assert "https://github.com/zjunlp/EasyEdit" in out  # other repositories are left alone
