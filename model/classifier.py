"""The shipped classifier: an int8 TFLite CNN plus the metadata that says how to feed it.

The metadata JSON beside the ``.tflite`` holds the feature parameters, the decision
threshold and the poor-signal rules that training chose, and the model file's sha256.
Loading refuses any model whose bytes, shape or parameters do not match its metadata, so
training and inference cannot silently disagree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import numpy as np

import dsp
from dsp import signal_quality

from .errors import ModelFileError
from .runtime import make_interpreter
from .verdict import ABNORMAL, NORMAL, POOR_SIGNAL, UNCERTAIN, Verdict

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "heartpi-cnn.tflite"
METADATA_FORMAT = 1


@lru_cache(maxsize=1)
def software_version() -> str:
    try:
        from importlib.metadata import version

        return version("heartpi")
    except Exception:  # running from a source tree that is not installed
        return "0+unknown"


def logit_spread(scores: np.ndarray) -> float:
    """Standard deviation of the window scores' logits (clipped to 1e-4 .. 1 - 1e-4): how much
    the windows of one recording disagree. A dozen numbers: plain Python beats numpy's
    per-call overhead here."""
    logits = [math.log(p / (1.0 - p)) for p in np.clip(scores, 1e-4, 1 - 1e-4).tolist()]
    mean = sum(logits) / len(logits)
    return math.sqrt(sum((v - mean) ** 2 for v in logits) / len(logits))


def metadata_path(model_path: Union[str, os.PathLike]) -> Path:
    return Path(model_path).with_suffix(".json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Classifier:
    """Scores recordings with one loaded model. Not thread-safe: one per thread."""

    def __init__(self, model_content: bytes, metadata: dict, *, path: Optional[Path] = None,
                 runtime: Optional[str] = None, threads: int = 2) -> None:
        self.path = path
        self.metadata = metadata
        self.sha256 = sha256_bytes(model_content)
        self._check_metadata()
        self.params = dsp.FeatureParams.from_dict(metadata["features"])
        self.threshold = float(metadata["threshold"])
        self.calibrated = False
        self.uncertainty_max = float(metadata.get("poor_signal", {}).get("max_window_logit_std", 1e9))
        #: stretches that are not the heart are left out (dsp.interruptions) as this model's
        #: metadata says; a model made before those rules scores every window, as it was evaluated
        rules = metadata.get("poor_signal", {}).get("quality_thresholds", {})
        self.dropout_db = float(rules.get("dropout_db", math.inf))
        self.noise_burst_db = float(rules.get("noise_burst_db", math.inf))
        trained_with = metadata.get("poor_signal", {}).get("quality_thresholds")
        if trained_with and trained_with != signal_quality._thresholds():
            log.warning("model metadata was made with other signal-quality thresholds (%s) than this "
                        "software uses (%s)", trained_with, signal_quality._thresholds())
        self.interpreter, self.runtime = make_interpreter(model_content, runtime=runtime, num_threads=threads)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = 1
        expected = (1, self.params.n_mfcc, self.params.frames_per_window, 1)
        if tuple(self._input["shape"]) != expected:
            raise ModelFileError(f"model input shape {tuple(self._input['shape'])} does not match "
                                 f"its metadata's feature parameters {expected}")

    def _check_metadata(self) -> None:
        meta = self.metadata
        for key in ("format", "features", "threshold", "tflite_sha256", "labels"):
            if key not in meta:
                raise ModelFileError(f"model metadata is missing {key!r}; reinstall the model")
        if meta["format"] != METADATA_FORMAT:
            raise ModelFileError(f"model metadata format {meta['format']} is not supported "
                                 f"(this software reads format {METADATA_FORMAT})")
        if meta["tflite_sha256"] != self.sha256:
            raise ModelFileError("model file does not match its metadata (sha256 differs): the file "
                                 "is corrupt or from another model; reinstall the model")
        if not 0.0 < float(meta["threshold"]) < 1.0:
            raise ModelFileError("model metadata threshold must be between 0 and 1")
        # A newer model may turn audio into features in a way this software cannot: reading its
        # metadata without that setting would score every recording wrongly, without an error.
        unknown = sorted(set(meta["features"]) - set(dsp.FeatureParams.__dataclass_fields__))
        if unknown:
            raise ModelFileError(f"the model needs feature settings this HeartPi {software_version()} does not "
                                 f"know ({', '.join(unknown)}): update HeartPi before installing this model")

    #: Fewest known-healthy recordings a per-device threshold may be set from: below that the
    #: quantile is mostly noise (and the web page says so before suggesting calibration).
    MIN_CALIBRATION_RECORDINGS = 20

    @classmethod
    def load(cls, path: Union[str, os.PathLike, None] = None, *, runtime: Optional[str] = None,
             calibration: Union[str, os.PathLike, None] = None, threads: int = 2) -> "Classifier":
        """Load a model and its metadata (``.json`` beside it); the bundled one by default.

        ``threads``: interpreter threads (see :func:`model.runtime.make_interpreter`).

        ``calibration``: a per-device threshold file (``heartpi model calibrate``), applied
        when it exists and was made for this very model.
        """
        model_path = Path(path) if path else DEFAULT_MODEL
        try:
            content = model_path.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"model file {model_path} cannot be read ({exc.strerror})") from None
        try:
            metadata = json.loads(metadata_path(model_path).read_text())
        except OSError as exc:
            raise ModelFileError(f"model metadata {metadata_path(model_path)} cannot be read "
                                 f"({exc.strerror})") from None
        except ValueError:
            raise ModelFileError(f"model metadata {metadata_path(model_path)} is not valid JSON") from None
        classifier = cls(content, metadata, path=model_path, runtime=runtime, threads=threads)
        log.info("model loaded: %s sha256 %s (%s)", model_path.name, classifier.sha256[:12], classifier.runtime)
        if calibration and Path(calibration).exists():
            classifier.apply_calibration(calibration)
        return classifier

    def apply_calibration(self, path: Union[str, os.PathLike]) -> bool:
        """Use a per-device threshold, if the file was made for this model (else keep the
        model's own threshold and say why in the log)."""
        try:
            data = json.loads(Path(path).read_text())
            threshold = float(data["threshold"])
            made_for = data["model_sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("calibration %s ignored: unreadable (%s)", path, exc)
            return False
        if made_for != self.sha256:
            log.warning("calibration %s ignored: it was made for model %s, this is %s; run "
                        "'heartpi model calibrate' again", path, made_for[:12], self.sha256[:12])
            return False
        # The same network cutting its windows differently scores differently (the window hop
        # changed on 2026-11-30; calibrations made before then carry no settings, at 1.5 s).
        made_with = dsp.FeatureParams.from_dict(data.get("features") or {"window_hop_s": 1.5})
        if made_with != self.params:
            log.warning("calibration %s ignored: it was made with other feature settings (%s); run "
                        "'heartpi model calibrate' again", path, ", ".join(
                            f"{k} {v} now {getattr(self.params, k)}" for k, v in made_with.to_dict().items()
                            if v != getattr(self.params, k)))
            return False
        if not 0.0 < threshold < 1.0:
            log.warning("calibration %s ignored: threshold %r outside (0, 1)", path, threshold)
            return False
        log.info("per-device calibration: threshold %.3f (model's own %.3f) from %s healthy recordings",
                 threshold, self.threshold, data.get("recordings", "?"))
        self.threshold = threshold
        self.calibrated = True
        return True

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        """P(abnormal) of each feature window, shape ``(n,)``: one batched invoke."""
        n = len(windows)
        if n == 0:
            return np.empty(0, np.float32)
        if self._batch != n:  # resize once per recording length, not per window
            self.interpreter.resize_tensor_input(self._input["index"], [n, *self._input["shape"][1:]])
            self.interpreter.allocate_tensors()
            self._batch = n
        scale, zero = self._input["quantization"]
        x = np.asarray(windows, np.float32)[..., None]
        if self._input["dtype"] == np.int8:
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        self.interpreter.set_tensor(self._input["index"], x.astype(self._input["dtype"], copy=False))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._output["index"]).reshape(-1)
        if self._output["dtype"] == np.int8:
            out_scale, out_zero = self._output["quantization"]
            return ((y.astype(np.int32) - int(out_zero)) * out_scale).astype(np.float32)
        return y.astype(np.float32)

    def classify(self, samples: np.ndarray, rate: int, *,
                 min_seconds: float = signal_quality.MIN_QUALITY_SECONDS) -> Verdict:
        """Verdict for a whole recording: quality gate, windowed scores, mean, threshold. A stretch
        with the chest piece off the skin, or of talking or rubbing, is left out of the windows
        (:mod:`dsp.interruptions`) and of the quality gate and heart rate (:func:`dsp.judge`);
        fewer than ``min_seconds`` left is poor signal.

        ``min_seconds``: a shorter recording is ``poor_signal`` (``too_short``); the device
        passes its own, longer minimum (config ``audio.min_seconds``).
        """
        judged = dsp.judge(samples, rate, self.params, dropout_db=self.dropout_db, burst_db=self.noise_burst_db,
                           min_seconds=min_seconds)
        report, reasons, scored = judged.report, list(judged.reasons), judged.scored
        p_abnormal: Optional[float] = None
        n_windows = 0
        if judged.scorable and scored is not None:
            scores = self.score_windows(scored.windows)
            n_windows = len(scores)
            p_abnormal = float(np.mean(scores))
            if n_windows > 1 and logit_spread(scores) > self.uncertainty_max:
                reasons.append(UNCERTAIN)
        if reasons or p_abnormal is None:  # unscored only with a reason (dsp.judge's)
            label = POOR_SIGNAL
        else:
            label = ABNORMAL if p_abnormal >= self.threshold else NORMAL
        return Verdict(label=label, p_abnormal=p_abnormal, threshold=self.threshold,
                       quality_reasons=tuple(reasons), heart_rate_bpm=report.heart_rate_bpm,
                       duration_s=report.duration_s, model_sha256=self.sha256,
                       software_version=software_version(), windows=n_windows,
                       quality=report.to_dict(), lifted_s=round(scored.lifted_s, 2) if scored else 0.0,
                       noisy_s=round(scored.noisy_s, 2) if scored else 0.0)

    def classify_file(self, path: Union[str, os.PathLike]) -> Verdict:
        """Read (and validate) a WAV, or a phone's compressed recording (:func:`dsp.read_audio`),
        and classify it; BadAudioError for a bad file."""
        audio = dsp.read_audio(path)
        return self.classify(audio.samples, audio.rate)
