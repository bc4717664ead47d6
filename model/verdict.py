"""The result of classifying one recording."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

NORMAL = "normal"
ABNORMAL = "abnormal"
POOR_SIGNAL = "poor_signal"
LABELS = (NORMAL, ABNORMAL, POOR_SIGNAL)

#: What the health worker is told (LEDs, web page, CLI).
LABEL_TEXT = {
    NORMAL: "normal",
    ABNORMAL: "abnormal: refer",
    POOR_SIGNAL: "poor signal: record again",
}

#: Added wherever a verdict is shown.
DISCLAIMER = "Screening aid, not a diagnosis."

#: Reason added when the model's window scores disagree too much to trust their mean.
UNCERTAIN = "model_uncertain"

#: A normal from a recording shorter than this says less. Sensitivity falls as recordings get
#: shorter while specificity holds (``tools/eval_short_clips.py``, the model shipped on
#: 2026-11-30, stretches of the same validation recordings: 0.87 at 20 s, 0.82 at 10 s, 0.77
#: at 8 s, 0.71 at 3 s; 1.2-4 s clips as other stethoscopes and phone apps export, 0.68). Chosen
#: on validation where the loss reaches 0.05; the test split falls the same way (0.76, 0.73,
#: 0.72, 0.64). Uploads are often this short, and the box stops at 5 s when pressed again.
SHORT_RECORDING_SECONDS = 10.0
SHORT_NORMAL_CAUTION = ("Short recording ({seconds:.1f} s): a normal result from under 10 s misses more abnormal "
                        "hearts than one from 20 s; record 20 s if you can.")


def caution(label: str, duration_s: float) -> Optional[str]:
    """The sentence to show beside a verdict (recording page, ``heartpi classify``, CSV and FHIR
    exports), or None: only a normal from a short recording has one. The duration is cut, not
    rounded, to 0.1 s, so that 9.97 s does not read "10.0 s" beside "under 10 s"."""
    if label == NORMAL and duration_s < SHORT_RECORDING_SECONDS:
        return SHORT_NORMAL_CAUTION.format(seconds=math.floor(duration_s * 10) / 10)
    return None


@dataclass(frozen=True)
class Verdict:
    label: str
    p_abnormal: Optional[float]
    threshold: float
    quality_reasons: tuple[str, ...]
    heart_rate_bpm: Optional[float]
    duration_s: float
    model_sha256: str
    software_version: str
    windows: int = 0
    quality: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return LABEL_TEXT[self.label]

    @property
    def caution(self) -> Optional[str]:
        return caution(self.label, self.duration_s)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["quality_reasons"] = list(self.quality_reasons)
        data["text"] = self.text
        data["caution"] = self.caution
        return data
