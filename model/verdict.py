"""The result of classifying one recording."""

from __future__ import annotations

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

    def to_dict(self) -> dict:
        data = asdict(self)
        data["quality_reasons"] = list(self.quality_reasons)
        data["text"] = self.text
        return data
