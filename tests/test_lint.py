"""The code has none of the mistakes a linter finds for certain: undefined or unused names, syntax
errors, likely bugs, invalid escapes in strings (ruff's F, E9, B and W605 rules, configured in
pyproject.toml; not style); and the device path type-checks (mypy, configured there too)."""

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


def test_the_project_rules_find_an_invalid_escape(tmp_path):
    """With the project's own rules: a docstring's stray backslash (a warning at every import) is reported."""
    (tmp_path / "escape.py").write_text('def f():\n    """The fullUrl\\ s."""\n')
    result = subprocess.run([_ruff(), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                             str(tmp_path / "escape.py")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "W605" in result.stdout


def _mypy() -> list[str]:
    try:
        import mypy  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("mypy missing: tools/bootstrap.sh test installs it (the [test] extra)")
        pytest.skip("mypy not installed (tools/bootstrap.sh test installs it)")
    return [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]


def test_the_device_path_type_checks(tmp_path):
    result = subprocess.run([*_mypy(), "--cache-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "no issues found in" in result.stdout


def test_the_type_checker_finds_a_none_used_as_a_value(tmp_path):
    """The check can fail: an Optional read without looking for None is reported."""
    (tmp_path / "maybe.py").write_text("from typing import Optional\n\n\n"
                                       "def half(rate: Optional[int]) -> float:\n    return rate / 2\n")
    result = subprocess.run([*_mypy(), "--cache-dir", str(tmp_path / "cache"), str(tmp_path / "maybe.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "[operator]" in result.stdout, result.stdout
