"""One person at the box: the places the clinic's protocol records, and the visit they share.

A screening programme often listens at several places (the four classic areas; rheumatic heart
disease shows first at the apex), one recording each. The box cannot see the chest, so it keeps
count: the ready light flashes the number of the place that comes next, a result moves on to the
next place, and after the last place the next press is a new person. A poor signal (or a
cancelled or failed recording) stays at the same place: record it again; but the third poor signal
in a row at one place *about the heart sound itself* (no regular heartbeat found, or the model's
windows disagreeing: :data:`HEART_REASONS`) ends the person with "cannot judge: refer"
(:data:`POOR_SIGNALS_TO_REFER`). Abnormal hearts come out so two to three times as often as normal
ones (validation split: no heartbeat found 10 % against 3 %), so a person the box keeps refusing
must not be sent home by a health worker who gave up. A silent, clipped, noisy or too short
recording says something about the stethoscope, the room or the button instead: it neither counts
nor resets the count. The last place's result
light shows the person's result, not only that place's: red if any of the person's places said
refer, so a red at place 2 is not forgotten by the time place 4 shows green. A long press starts
the next person at the first place, and so does a pause longer than ``audio.visit_gap_minutes``
(a health worker who gave up on a person after poor signals and walked on).

Every recording of one person carries the same visit id, so staff assign a patient once for all
of them, and the field results count one person, not four. Without a protocol a visit is the one
recording plus whatever is recorded again after a poor signal.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from dsp.signal_quality import NO_HEARTBEAT
from model.verdict import UNCERTAIN

from .records import POOR_SIGNALS_TO_REFER, screening_verdict
from .sites import SITES

#: results after which the box moves on to the next place; anything else is recorded again
MOVES_ON = ("normal", "abnormal")
POOR_SIGNAL = "poor_signal"
#: the poor-signal reasons that are about the person's heart sound, so count towards that rule
HEART_REASONS = (NO_HEARTBEAT, UNCERTAIN)
#: a person's result when :data:`POOR_SIGNALS_TO_REFER` poor signals ended them
CANNOT_JUDGE = "cannot_judge"
def new_visit_id() -> str:
    """Unique enough for one clinic's records and short enough to read out: 12 hex digits."""
    return secrets.token_hex(6)


@dataclass(frozen=True)
class PersonResult:
    """What the box shows when a person's last place is done: the verdict a health worker acts
    on (:func:`device.records.screening_verdict` of every place's result) and the places that
    said refer, in the protocol's order."""

    verdict: str
    refer_at: tuple[str, ...]
    #: the place where :data:`POOR_SIGNALS_TO_REFER` poor signals ended the person ("" for no
    #: place named), or None when every place gave a result
    unjudged_at: Optional[str] = None

    def describe(self) -> str:
        """Words for the journal and the simulation's console."""
        if self.unjudged_at is not None:
            where = f" at {SITES[self.unjudged_at].label}" if self.unjudged_at else ""
            return (f"the person's result: refer, the box cannot judge them ({POOR_SIGNALS_TO_REFER} poor signals "
                    f"in a row{where})")
        if not self.refer_at:
            return "the person's result: normal at every place"
        where = ", ".join(SITES[s].label for s in self.refer_at)
        return f"the person's result: refer ({where})"


class Visit:
    """Which place comes next and which visit the next recording belongs to.

    Not thread-safe: the daemon's one cycle thread is its only user.
    """

    def __init__(self, sites: Sequence[str] = (), *, gap_seconds: float = 600.0,
                 clock: Callable[[], float] = time.monotonic,
                 new_id: Callable[[], str] = new_visit_id) -> None:
        unknown = [s for s in sites if s not in SITES]
        if unknown:
            raise ValueError(f"unknown place {unknown[0]!r}; places: {', '.join(SITES)}")
        self.sites = tuple(sites)
        self.gap_seconds = gap_seconds
        self._clock = clock
        self._new_id = new_id
        self.position = 0  #: index of the next place in ``sites``
        self.id: Optional[str] = None  #: None until the person's first recording
        self._last_at: Optional[float] = None
        self._results: dict[str, str] = {}  #: place -> the result that moved on from it
        self._poor_in_a_row = 0  #: poor signals about the heart at the current place since its last result

    @property
    def guided(self) -> bool:
        """True when there are several places, so the ready light must say which comes next."""
        return len(self.sites) > 1

    @property
    def site(self) -> Optional[str]:
        """The place the next recording is made at (None: the clinic names none)."""
        return self.sites[self.position] if self.sites else None

    @property
    def place_number(self) -> int:
        """1-based number of the next place, as the ready light flashes it."""
        return self.position + 1

    def describe_next(self) -> str:
        """Words for the journal and the simulation's console."""
        if not self.sites:
            return "next recording: any place"
        site = SITES[self.sites[self.position]]
        return f"next: place {self.place_number} of {len(self.sites)}, {site.label} ({site.where})"

    def expires_at(self) -> Optional[float]:
        """When a pause ends this person (clock seconds), or None while nobody is being recorded."""
        if self.id is None or self._last_at is None:
            return None
        return self._last_at + self.gap_seconds

    def expire_if_paused(self) -> bool:
        """End the visit when the pause has run out; True if it did."""
        until = self.expires_at()
        if until is not None and self._clock() >= until:
            self.next_person()
            return True
        return False

    def stamp(self) -> tuple[Optional[str], str]:
        """(place, visit id) for a recording being stored now; starts a visit if none is open.
        (Whether a pause ended the last person is asked at the press, :meth:`expire_if_paused`:
        the place the light showed then is the one recorded.)"""
        if self.id is None:
            self.id = self._new_id()
        self._last_at = self._clock()
        return self.site, self.id

    @staticmethod
    def about_the_heart(label: Optional[str], reasons: Sequence[str]) -> bool:
        """A poor signal whose every reason is in :data:`HEART_REASONS`."""
        return label == POOR_SIGNAL and bool(reasons) and all(r in HEART_REASONS for r in reasons)

    def ends_unjudged(self, label: Optional[str], reasons: Sequence[str] = ()) -> bool:
        """Whether a recording ending with ``label`` (for ``reasons``) now would be the poor signal
        that ends the person as :data:`CANNOT_JUDGE` (asked before the recording is stored, for its
        note)."""
        return self.about_the_heart(label, reasons) and self._poor_in_a_row + 1 >= POOR_SIGNALS_TO_REFER

    def recorded(self, label: Optional[str], reasons: Sequence[str] = ()) -> Optional[PersonResult]:
        """A recording at the current place ended with ``label`` (poor signal for ``reasons``): a
        result moves on (past the last place: the next press is a new person); a poor signal or
        failure stays, until the :data:`POOR_SIGNALS_TO_REFER`-th poor signal in a row about the
        heart sound ends the person as :data:`CANNOT_JUDGE`.

        Returns the person's result when this recording finished the last of several places, or
        ended the person unjudged (None otherwise: with one place or none, the recording's own
        result is the person's)."""
        if label not in MOVES_ON:
            if self.ends_unjudged(label, reasons):
                unjudged = PersonResult(CANNOT_JUDGE, tuple(s for s in self.sites if self._results.get(s) == "abnormal"),
                                        unjudged_at=self.site or "")
                self.next_person()
                return unjudged
            if self.about_the_heart(label, reasons):
                self._poor_in_a_row += 1
            return None
        self._poor_in_a_row = 0
        if self.site is not None:
            self._results[self.site] = label
        if self.position + 1 < max(len(self.sites), 1):
            self.position += 1
            return None
        person: Optional[PersonResult] = None
        if self.guided:  # never None below: this place's result was just kept
            person = PersonResult(screening_verdict(self._results.values()) or label,
                                  tuple(s for s in self.sites if self._results.get(s) == "abnormal"))
        self.next_person()
        return person

    def next_person(self) -> None:
        """The next recording is someone else's, at the first place."""
        self.position = 0
        self.id = None
        self._last_at = None
        self._results = {}
        self._poor_in_a_row = 0
