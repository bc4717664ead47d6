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

#: A clip shorter than this (one 3 s window and less than one 1.5 s hop more) is judged on a few
#: heart cycles, as other stethoscopes and phone apps export them. On such clips the model finds
#: far fewer abnormal hearts than in whole recordings (``tools/eval_short_clips.py``: the model
#: shipped on 2026-11-30, test split, sensitivity 0.58 in 1.2-4 s clips against 0.79) while its
#: specificity holds, so a "normal" from a short clip says less. The device itself records 5 s
#: or more; this concerns uploads.
SHORT_CLIP_SECONDS = 4.5
SHORT_NORMAL_CAUTION = ("short clip: a normal result from a few heart cycles misses more abnormal hearts "
                        "than one from a whole recording; record 20 s if you can")


def caution(label: str, duration_s: float) -> Optional[str]:
    """What to add to a verdict shown to a person, or None: a normal from a short clip."""
    return SHORT_NORMAL_CAUTION if label == NORMAL and duration_s < SHORT_CLIP_SECONDS else None


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
