"""The code has none of the mistakes a linter finds for certain: undefined or unused names, syntax
errors, likely bugs (ruff's F, E9 and B rules, configured in pyproject.toml; not style)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("ruff missing: tools/bootstrap.sh test installs it (the [test] extra)")
        pytest.skip("ruff not installed (tools/bootstrap.sh test installs it)")
    return found


def test_no_linter_findings():
    result = subprocess.run([_ruff(), "check", "--output-format", "concise", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_linter_finds_an_undefined_name(tmp_path):
    """The check can fail: a module using a name it never defined is reported."""
    (tmp_path / "broken.py").write_text("def f():\n    return undefined_name\n")
    result = subprocess.run([_ruff(), "check", "--no-cache", "--select", "F", str(tmp_path / "broken.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "F821" in result.stdout
