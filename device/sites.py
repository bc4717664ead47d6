"""Where on the chest a recording was made: the four classic auscultation areas.

A murmur's place says much about its cause (aortic stenosis loudest at the aortic area, mitral
regurgitation at the apex), so a clinician reading a referral needs it, and a screening
programme comparing devices or clinics needs it recorded the same way everywhere. The device
stamps the clinic protocol's place (``audio.site``, or the next of ``audio.sites``:
:mod:`device.visits`) on what it records; staff correct it, or give it for an upload, on the
web page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class AuscultationSite:
    name: str  #: stored in the database and exports
    label: str  #: what staff read
    where: str  #: how to find it on the chest, for the guide and the recording page


SITES = {site.name: site for site in (
    AuscultationSite("aortic", "aortic area", "right side of the breastbone, 2nd space between the ribs"),
    AuscultationSite("pulmonic", "pulmonic area", "left side of the breastbone, 2nd space between the ribs"),
    AuscultationSite("tricuspid", "tricuspid area", "left side of the lower breastbone, 4th or 5th space"),
    AuscultationSite("mitral", "mitral area (apex)",
                     "left chest, 5th space between the ribs, below the middle of the collarbone"),
)}


def site_label(name: Optional[str]) -> str:
    """The place's short name for lists ("–": not recorded)."""
    site = SITES.get(name or "")
    return site.label if site else "–"


def site_text(name: Optional[str]) -> str:
    """Words for a stored site (``None``: not recorded)."""
    site = SITES.get(name or "")
    return f"{site.label}: {site.where}" if site else "not recorded"
