"""The result of classifying one recording."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Protocol

from dsp.signal_quality import QUIET_RMS_DBFS
from dsp.signal_quality import REASON_ADVICE as SIGNAL_ADVICE

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

#: How a recording's note ends when stretches were left out of its verdict (:attr:`Verdict.left_out_note`).
LEFT_OUT_MARK = "left out of the verdict"

#: Added wherever a verdict is shown.
DISCLAIMER = "Screening aid, not a diagnosis."

#: Reason added when the model's window scores disagree too much to trust their mean.
UNCERTAIN = "model_uncertain"
#: What to do about each poor-signal reason, the model's own included, in words for staff
#: (the recording page, the Device page): never a reason's code.
REASON_ADVICE = {**SIGNAL_ADVICE,
                 UNCERTAIN: "the heart sounds changed during the recording (movement, talking, a knock): "
                            "hold the stethoscope still and record again"}

#: A normal from a recording shorter than this says less. Sensitivity falls as recordings get
#: shorter while specificity holds (``tools/eval_short_clips.py``, the model shipped on
#: 2026-11-30, stretches of the same validation recordings: 0.87 at 20 s, 0.82 at 10 s, 0.77
#: at 8 s, 0.71 at 3 s; 1.2-4 s clips as other stethoscopes and phone apps export, 0.68). Chosen
#: on validation where the loss reaches 0.05; the test split falls the same way (0.76, 0.73,
#: 0.72, 0.64). Uploads are often this short, and the box stops at 5 s when pressed again.
SHORT_RECORDING_SECONDS = 10.0
SHORT_NORMAL_CAUTION = ("Short recording ({seconds}): a normal result from under 10 s misses more abnormal "
                        "hearts than one from 20 s; record 20 s if you can.")

#: An abnormal from a quiet recording says less: below :data:`dsp.signal_quality.QUIET_RMS_DBFS`
#: the converter's rounding noise fills the quiet between heart sounds and the model refers more
#: healthy people while sensitivity holds (``tools/eval_sample_resolution.py``, the test split's
#: 16-bit source sets: specificity 0.73 as stored, 0.66 at -50 dBFS, 0.62 at -60). Recordings
#: this quiet are rare when the gain is set as the technician's guide says (7 of the 2,592
#: PhysioNet recordings). The caution never withholds the referral: it asks for a louder recording.
QUIET_ABNORMAL_CAUTION = ("Quiet recording ({level:d} dBFS): below {limit:.0f} dBFS the model calls more healthy "
                          "hearts abnormal. Record this place again with the stethoscope pressed firmly or the "
                          "capture gain raised; if you cannot, refer as advised.")


@dataclass(frozen=True)
class Caution:
    """What qualifies one verdict: ``kind`` names it for pages (``short``, ``quiet``), ``mark``
    is the few words a list shows beside the verdict, ``sentence`` what the recording page, the
    CLI and the exports say."""
    kind: str
    mark: str
    sentence: str


def _tenths(seconds: float) -> str:
    """Cut, not rounded, to 0.1 s, so that 9.97 s does not read "10.0 s" beside "under 10 s"."""
    return f"{math.floor(seconds * 10) / 10:.1f} s"


def verdict_caution(label: Optional[str], duration_s: float, level_dbfs: Optional[float] = None,
                    left_out_s: Optional[float] = None) -> Optional[Caution]:
    """The caution that goes with a verdict, or None. A normal from a short recording misses more
    abnormal hearts; an abnormal from a quiet one refers more healthy people (``level_dbfs``: the
    recording's RMS level, None when not measured, as for recordings stored before levels were).
    ``left_out_s``: the seconds the verdict did not hear (:mod:`dsp.interruptions`; None or 0:
    none), so a 12 s recording with 4 s of talking left out is a short one. The level is cut
    down to whole dB, as seconds to 0.1 s (-45.3 reads "-46")."""
    heard_s = duration_s - (left_out_s or 0.0)
    if label == NORMAL and heard_s < SHORT_RECORDING_SECONDS:
        seconds = (f"{_tenths(heard_s)} heard of {_tenths(duration_s)}" if left_out_s else _tenths(duration_s))
        return Caution("short", "short recording", SHORT_NORMAL_CAUTION.format(seconds=seconds))
    if label == ABNORMAL and level_dbfs is not None and level_dbfs < QUIET_RMS_DBFS:
        return Caution("quiet", "quiet recording",
                       QUIET_ABNORMAL_CAUTION.format(level=math.floor(level_dbfs), limit=QUIET_RMS_DBFS))
    return None


class StoredVerdict(Protocol):
    """What a stored recording (:class:`device.records.Recording`) holds of its verdict's caution."""
    @property
    def verdict(self) -> Optional[str]: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def level_dbfs(self) -> Optional[float]: ...
    @property
    def left_out_s(self) -> Optional[float]: ...


def recording_caution(rec: StoredVerdict) -> Optional[Caution]:
    """:func:`verdict_caution` of a stored recording, from the fields it keeps for it: one place,
    so the recording page and both exports cannot pass different ones."""
    return verdict_caution(rec.verdict, rec.duration_s, rec.level_dbfs, rec.left_out_s)


def caution(label: Optional[str], duration_s: float, level_dbfs: Optional[float] = None,
            left_out_s: Optional[float] = None) -> Optional[str]:
    """The sentence of :func:`verdict_caution` (``heartpi classify``, CSV and FHIR exports), or None."""
    found = verdict_caution(label, duration_s, level_dbfs, left_out_s)
    return found.sentence if found else None


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
    #: seconds left out of the windows (:mod:`dsp.interruptions`): the chest piece off the skin,
    #: and a burst of noise (talking, rubbing)
    lifted_s: float = 0.0
    noisy_s: float = 0.0

    @property
    def text(self) -> str:
        return LABEL_TEXT[self.label]

    @property
    def level_dbfs(self) -> Optional[float]:
        """The recording's RMS level as the quality check measured it (None if it did not)."""
        return self.quality.get("rms_dbfs")

    @property
    def left_out_s(self) -> float:
        """Seconds of the recording the verdict did not hear."""
        return self.lifted_s + self.noisy_s

    @property
    def caution(self) -> Optional[str]:
        return caution(self.label, self.duration_s, self.level_dbfs, self.left_out_s)

    @property
    def left_out_note(self) -> Optional[str]:
        """Words for the recording's note when a stretch with the chest piece off the skin or a
        burst of noise was left out (:mod:`dsp.interruptions`), or None: staff listening to it
        hear what the verdict did not."""
        parts = ([f"{self.lifted_s:.1f} s with the stethoscope off the skin"] if self.lifted_s else []) + (
            [f"{self.noisy_s:.1f} s of noise (talking, rubbing)"] if self.noisy_s else [])
        return " and ".join(parts) + f" {LEFT_OUT_MARK}" if parts else None

    def stored_fields(self) -> dict:
        """What a recording's record keeps of its verdict, as keyword arguments of
        :meth:`device.records.RecordStore.add_recording` (the box's recordings and uploads alike)."""
        return dict(verdict=self.label, p_abnormal=self.p_abnormal, threshold=self.threshold,
                    quality_reasons=self.quality_reasons, heart_rate_bpm=self.heart_rate_bpm,
                    model_sha256=self.model_sha256, software_version=self.software_version,
                    level_dbfs=self.level_dbfs, left_out_s=round(self.left_out_s, 2))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["quality_reasons"] = list(self.quality_reasons)
        data["text"] = self.text
        data["caution"] = self.caution
        return data
