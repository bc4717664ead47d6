"""Who may import whom (DESIGN.md), and no hardware or heavy imports at import time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("statement,forbidden", [
    ("import dsp", {"scipy", "model", "device", "webui", "librosa", "tensorflow", "pyaudio", "gpiozero"}),
    ("import model", {"tensorflow", "model.train", "device", "webui", "librosa", "keras"}),
    ("import device, device.records, device.daemon, device.runner", {"webui", "pyaudio", "gpiozero", "tensorflow", "flask"}),
    ("import webui; webui.create_app", {"device.daemon", "device.runner", "device.capture", "pyaudio", "gpiozero", "tensorflow"}),
    ("import heartpi.cli", {"dsp", "model", "device", "webui", "numpy"}),
])
def test_import_rules(statement, forbidden):
    modules = loaded_after(statement)
    leaked = {m for m in modules if m.split(".")[0] in forbidden or m in forbidden}
    assert not leaked, f"{statement} imported {sorted(leaked)}"


def test_dsp_does_not_import_our_other_packages_in_source():
    for path in (ROOT / "dsp").glob("*.py"):
        text = path.read_text()
        for other in ("model", "device", "webui", "heartpi"):
            assert f"import {other}" not in text and f"from {other}" not in text, (path, other)
    for path in (ROOT / "device").glob("*.py"):
        text = path.read_text()
        assert "import webui" not in text and "from webui" not in text, path
    records = (ROOT / "device" / "records.py").read_text()
    assert "import model" not in records and "from model" not in records
