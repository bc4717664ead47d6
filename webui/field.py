"""How the device does in the field: its verdicts against what clinicians found.

The model card's figures come from recordings of other stethoscopes; this device's own
stethoscope, room and patients are what matter. Each time a clinician examines a person who
was screened and enters the finding on the recording's page, the device gains one labelled
case. This module turns those into sensitivity, specificity and the share of referrals that
were confirmed, with 95% intervals, and says when there are too few to judge, and when the
healthy people it calls abnormal are enough to re-set its threshold (`heartpi model calibrate
--confirmed-normal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from model.metrics import wilson_interval

#: Fewest cases of one kind before a proportion is shown as more than "too few to judge".
MIN_CASES = 10
#: The share referred is counted over this many recent days: a stethoscope changed last month
#: shows, and the count does not scan years of records on every view of the Device page.
REFERRAL_WINDOW_DAYS = 90


@dataclass(frozen=True)
class Proportion:
    """``hits`` of ``total``, with its 95% Wilson interval."""

    hits: int
    total: int

    @property
    def value(self) -> Optional[float]:
        return self.hits / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.hits, self.total)

    @property
    def enough(self) -> bool:
        return self.total >= MIN_CASES


@dataclass(frozen=True)
class FieldResults:
    sensitivity: Proportion       # of people found abnormal, how many the device referred
    specificity: Proportion       # of people found healthy, how many the device called normal
    referrals_confirmed: Proportion  # of referrals examined, how many were found abnormal
    poor_signal: int              # examined people whose recordings all ended as poor signal
    examined: int
    calibration_due: bool         # enough confirmed-healthy people and specificity clearly low

    @property
    def any(self) -> bool:
        return self.examined > 0


@dataclass(frozen=True)
class Referrals:
    """Of the people this device screened with the model in use (a result, not only poor signal),
    how many it referred; ``too_many`` when clearly more than ``alarm_share`` were."""

    referred: Proportion
    poor_signal: int              # screenings that ended with no result
    alarm_share: float
    too_many: bool


def referrals(counts: dict[str, int], *, alarm_share: float) -> Referrals:
    """From ``{verdict: people}`` (:meth:`RecordStore.screenings_by_verdict`).

    A model meeting a stethoscope it was never trained on tends to call most healthy hearts
    abnormal (the model card's leave-one-source-out table: 69-97 % of the people referred on
    four of six such source sets, 26 % on the test split), and no clinician's finding is needed
    to see that: only the share referred. It counts as too many once the share's 95 % interval
    lies wholly above ``alarm_share`` (so ten of ten referred is enough, eight of ten is not)."""
    referred = Proportion(counts.get("abnormal", 0), counts.get("abnormal", 0) + counts.get("normal", 0))
    too_many = referred.enough and referred.interval[0] > alarm_share
    return Referrals(referred, counts.get("poor_signal", 0), alarm_share, too_many)


def field_results(counts: dict[tuple[str, str], int], *, expected_specificity: Optional[float],
                  min_calibration: int) -> FieldResults:
    """From ``{(verdict, finding): n}`` (:meth:`RecordStore.findings_by_verdict`)."""
    def n(verdict: str, finding: str) -> int:
        return counts.get((verdict, finding), 0)

    found_abnormal = n("abnormal", "abnormal") + n("normal", "abnormal")
    found_normal = n("abnormal", "normal") + n("normal", "normal")
    specificity = Proportion(n("normal", "normal"), found_normal)
    low = (expected_specificity is not None and specificity.total >= min_calibration
           and specificity.interval[1] < expected_specificity)
    return FieldResults(
        sensitivity=Proportion(n("abnormal", "abnormal"), found_abnormal),
        specificity=specificity,
        referrals_confirmed=Proportion(n("abnormal", "abnormal"), n("abnormal", "abnormal") + n("abnormal", "normal")),
        poor_signal=n("poor_signal", "abnormal") + n("poor_signal", "normal"),
        examined=sum(counts.values()),
        calibration_due=low)
