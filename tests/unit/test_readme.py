"""The README's reference sections stay in step with the code."""

from __future__ import annotations

from pathlib import Path

from loopline.streams.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented():
    missing = [
        f"LOOPLINE_{name.upper()}"
        for name in Settings.model_fields
        if f"`LOOPLINE_{name.upper()}`" not in README
    ]
    assert not missing, f"document these in the README's Configuration table: {missing}"


def test_quick_start_uses_the_commands_ci_runs():
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "make demo" in README and "make test" in README
