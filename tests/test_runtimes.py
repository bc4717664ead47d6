"""Both TFLite runtimes load the shipped model and give the same verdicts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from model import Classifier

ROOT = Path(__file__).resolve().parents[1]
TFLITE_VENV_PYTHON = ROOT / ".venv-tflite" / "bin" / "python"
SCRIPT = """
import json, sys
from model import Classifier
from model.classifier import ASSETS
c = Classifier.load()
out = {p.name: [c.classify_file(p).label, c.classify_file(p).p_abnormal] for p in sorted((ASSETS / "reference").glob("*.wav"))}
print(json.dumps({"runtime": c.runtime, "verdicts": out}))
"""


def _verdicts(python: str, runtime: str) -> dict:
    env = dict(os.environ, HEARTPI_TFLITE_RUNTIME=runtime, PYTHONPATH=str(ROOT))
    result = subprocess.run([python, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_ai_edge_litert_runtime():
    classifier = Classifier.load(runtime="ai_edge_litert")
    assert classifier.runtime == "ai_edge_litert"


def test_tflite_runtime_gives_the_same_verdicts():
    if not TFLITE_VENV_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(".venv-tflite missing: tools/bootstrap.sh test must create it")
        pytest.skip(".venv-tflite not set up (tools/bootstrap.sh test creates it)")
    import sys

    litert = _verdicts(sys.executable, "ai_edge_litert")
    legacy = _verdicts(str(TFLITE_VENV_PYTHON), "tflite_runtime")
    assert litert["runtime"] == "ai_edge_litert" and legacy["runtime"] == "tflite_runtime"
    assert litert["verdicts"].keys() == legacy["verdicts"].keys() and litert["verdicts"]
    for name, (label, p) in litert["verdicts"].items():
        assert legacy["verdicts"][name][0] == label
        assert abs(legacy["verdicts"][name][1] - p) <= 2 / 256  # kernels differ by a quantisation step at most


def test_unknown_runtime_is_a_clear_error():
    from model import RuntimeMissingError

    with pytest.raises(RuntimeMissingError, match="unknown TFLite runtime"):
        Classifier.load(runtime="onnx")
