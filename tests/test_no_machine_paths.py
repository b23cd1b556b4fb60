"""Outputs print paths relative to the working folder (helpers.config.display_path).

The scan of committed notebooks/results/docs for absolute paths waits until chapters 07 and 08 are re-executed
(their saved outputs still carry paths from an older run)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
def test_display_path_is_relative(tmp_path, monkeypatch):
    from helpers.config import display_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    assert display_path(tmp_path / "results") == "results"
    assert display_path(Path.home() / ".cache" / "helpers") == "~/.cache/helpers"
    assert not display_path(tmp_path.parent / "elsewhere").startswith("/")
