"""The health worker's guide: how to record, what the lights mean, what to do after each result.

Made from the LEDs' own words (``device.gpio.PATTERNS``) and this device's settings (recording
length, long press, how long a result stays), so the printed card kept beside the box says what
this box does.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from device.gpio import PATTERNS
from device.sites import SITES

from . import get_config
from .auth import roles_required

bp = Blueprint("guide", __name__)


@bp.route("/guide")
@roles_required("admin", "clinician", "health_worker")
def guide():
    settings = get_config()
    places = [SITES[name] for name in settings.protocol]
    return render_template("guide.html", lights=list(PATTERNS.values()), settings=settings,
                           site=SITES.get(settings.only_site or ""), places=places if len(places) > 1 else [])
