"""Long lists in pages, and the patient picker: a clinic's lists grow without bound.

A year of screening is thousands of recordings and patients. A list cut at a fixed length
hides the rest silently, and a drop-down of every patient is unusable (and was cut too, so a
patient late in the alphabet could not be chosen at all). Lists therefore come in pages with
their total shown, and choosing a patient starts from the most recent ones plus a search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from flask import request

#: Rows per page of the recordings and patients lists.
PAGE_ROWS = 100
#: Patients offered in a picker before the user searches.
PICKER_ROWS = 50


@dataclass(frozen=True)
class Page:
    """Page ``number`` (1-based) of ``total`` rows, ``size`` per page."""

    number: int
    size: int
    total: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def count(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first_row(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last_row(self) -> int:
        return min(self.offset + self.size, self.total)

    @property
    def previous(self) -> Optional[int]:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> Optional[int]:
        return self.number + 1 if self.number < self.count else None


def current_page(total: int, size: int = PAGE_ROWS) -> Page:
    """The page asked for by ``?page=N``, clamped to the pages that exist."""
    raw = request.args.get("page", "1")
    number = int(raw) if raw.isdigit() else 1
    last = Page(number=1, size=size, total=total).count
    return Page(number=max(1, min(number, last)), size=size, total=total)


def args_for_page(number: int) -> dict:
    """The current query arguments with ``page`` replaced (for Newer/Older links)."""
    args = request.args.to_dict()
    args["page"] = str(number)
    return args


@dataclass(frozen=True)
class PatientChoice:
    """What a patient picker offers: the patients to list, what was searched, and how many
    matched in all (more than listed means the user should search, and is told so)."""

    patients: list
    query: str
    matched: int
    listed: int

    @property
    def only_match(self) -> Optional[int]:
        """The patient a search found alone: chosen for the user, who searched for them."""
        return self.patients[-1]["id"] if self.query and self.matched == 1 else None

    @property
    def more(self) -> bool:
        """Whether some matching patients are not listed (the user should search, or type more)."""
        return self.matched > self.listed


def patient_choice(store, selected_id: Optional[int] = None, arg: str = "find") -> PatientChoice:
    """Patients matching ``?find=`` (by name), else the most recently seen ones; the patient
    already ``selected`` is always among them so a form never silently drops it."""
    query = request.args.get(arg, "").strip()[:100]
    patients = store.list_patients(query, limit=PICKER_ROWS, recent_first=not query)
    listed = len(patients)
    # A short list holds every match; only a full one needs counting how many there are.
    matched = listed if listed < PICKER_ROWS else store.count_patients(query)
    if selected_id is not None and all(p["id"] != selected_id for p in patients):
        selected = store.get_patient(selected_id)
        if selected is not None:
            patients = [selected, *patients]
    return PatientChoice(patients=patients, query=query, matched=matched, listed=listed)
