"""Administration: accounts, self-registration, the audit log, the device status page and its clock."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import secrets
import shutil
import statistics
import time
import urllib.parse
from collections import Counter
from typing import Mapping, Optional

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for

from device import clock, send_request
from device.errors import StorageError
from device.power import ADVICE as POWER_ADVICE
from device.records import ROLES, ended_unjudged
from dsp.signal_quality import QUIET_RMS_DBFS, SILENCE_RMS
from model.verdict import REASON_ADVICE

from . import get_config, get_store
from .auth import actor, roles_required
from .exporting import fhir_outcomes, safe_cell
from .passwords import hash_password

bp = Blueprint("admin", __name__)


def temporary_password() -> str:
    return secrets.token_urlsafe(12)


@bp.route("/admin/users", methods=["GET", "POST"])
@roles_required("admin")
def users():
    store = get_store()
    created = None
    if request.method == "POST":
        email = request.form.get("email", "").strip()
        role = request.form.get("role", "")
        if "@" not in email or role not in ROLES:
            flash("Enter an email address and choose a role.", "error")
        else:
            password = temporary_password()
            try:
                store.add_user(email=email, password_hash=hash_password(password), role=role, actor=actor())
                created = (email, password)
            except ValueError as exc:
                flash(str(exc), "error")
    return render_template("admin_users.html", users=store.list_users(), roles=ROLES, created=created,
                           registration=store.get_setting("self_registration") == "on")


@bp.route("/admin/users/<int:user_id>", methods=["POST"])
@roles_required("admin")
def update_user(user_id: int):
    store = get_store()
    target = store.get_user(user_id)
    if target is None:
        abort(404)
    action = request.form.get("action", "")
    last_admin = target["role"] == "admin" and target["active"] and store.count_admins() <= 1
    reset = None
    if action == "approve":
        store.update_user(user_id, actor=actor(), audit_action="user.approve", approved=1)
    elif action in ("disable", "enable"):
        if action == "disable" and last_admin:
            flash("The last administrator cannot be disabled.", "error")
        else:
            store.update_user(user_id, actor=actor(), audit_action=f"user.{action}", active=int(action == "enable"))
            if action == "disable":
                store.end_user_sessions(user_id)
    elif action == "role":
        role = request.form.get("role", "")
        if role not in ROLES:
            abort(400, description="Unknown role.")
        if last_admin and role != "admin":
            flash("The last administrator must stay an administrator.", "error")
        else:
            store.update_user(user_id, actor=actor(), audit_action="user.role", role=role)
    elif action == "reset":
        reset = temporary_password()
        store.update_user(user_id, actor=actor(), audit_action="user.password_reset",
                          password_hash=hash_password(reset), failed_logins=0, locked_until=None)
        store.end_user_sessions(user_id)
    else:
        abort(400, description="Unknown action.")
    if reset:
        return render_template("admin_users.html", users=store.list_users(), roles=ROLES,
                               created=(target["email"], reset),
                               registration=store.get_setting("self_registration") == "on")
    return redirect(url_for("admin.users"), code=303)


@bp.route("/admin/settings", methods=["POST"])
@roles_required("admin")
def settings():
    value = "on" if request.form.get("self_registration") == "on" else "off"
    get_store().set_setting("self_registration", value, actor=actor())
    flash(f"Self-registration is now {value}.", "ok")
    return redirect(url_for("admin.users"), code=303)


#: The audit page shows this many entries, newest first; the CSV streams them all, in pages.
AUDIT_PAGE_ROWS = 500
AUDIT_CSV_PAGE = 5000
AUDIT_COLUMNS = ("id", "at", "actor", "action", "target", "detail")


def _audit_filters() -> tuple[dict, dict]:
    """(what the store filters by, what the form shows and its links carry): what was touched,
    the kind of action, and a range of the clinic's days."""
    typed = {"target": request.args.get("target", "").strip()[:100] or None,
             "action": request.args.get("action", "").strip()[:100] or None,
             "since": request.args.get("since", "").strip()[:10] or None,
             "until": request.args.get("until", "").strip()[:10] or None}
    clinic = get_config().clinic_time
    return dict(typed, since=clinic.day_bound(typed["since"]), until=clinic.day_bound(typed["until"])), typed


@bp.route("/admin/audit")
@roles_required("admin")
def audit() -> str:
    """Who did what: every view of a patient, every export, deletion, clock change and account
    change, newest first; filter by what was touched (``patient:7``), by kind of action or by
    day. Older entries come a page at a time, each page starting below the last one's id (no
    count, no offset: the log holds every view of every patient, for years)."""
    filters, typed = _audit_filters()
    raw = request.args.get("before", "")
    before = int(raw) if raw.isdigit() else None
    entries = get_store().audit_entries(limit=AUDIT_PAGE_ROWS + 1, before_id=before, **filters)
    older = entries[AUDIT_PAGE_ROWS - 1]["id"] if len(entries) > AUDIT_PAGE_ROWS else None
    return render_template("audit.html", entries=entries[:AUDIT_PAGE_ROWS], filters=typed, before=before,
                           older=older)


@bp.route("/admin/audit.csv")
@roles_required("admin")
def audit_csv() -> Response:
    """The whole (filtered) log as CSV, streamed a page at a time: years of entries must not
    have to fit in a Raspberry Pi's memory at once."""
    filters, typed = _audit_filters()
    store = get_store()
    store.audit(actor(), "audit.export", filters["target"] or "", " ".join(
        f"{key}={typed[key]}" for key in ("action", "since", "until") if typed[key]))

    def rows():
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(AUDIT_COLUMNS)
        before = None
        while True:
            page = store.audit_entries(limit=AUDIT_CSV_PAGE, before_id=before, **filters)
            for entry in page:
                writer.writerow([safe_cell(entry[c]) for c in AUDIT_COLUMNS])  # reasons are typed by users
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(page) < AUDIT_CSV_PAGE:
                return
            before = page[-1]["id"]

    return Response(rows(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=heartpi-audit.csv"})


@bp.route("/device")
@roles_required("admin", "clinician", "health_worker")
def device():
    from model import software_version
    from model.classifier import DEFAULT_MODEL, Classifier, metadata_path

    from .field import REFERRAL_WINDOW_DAYS, field_results, referrals

    config = get_config()
    store = get_store()
    model_path = str(config.model_file or DEFAULT_MODEL)
    try:
        meta = json.loads(metadata_path(model_path).read_text())
    except (OSError, ValueError):
        meta = {}
    usage = shutil.disk_usage(config.data_dir if config.data_dir.exists() else "/")
    recordings = store.list_recordings(limit=10)
    n_recordings = store.count_recordings()
    status = store.status()
    expected = meta.get("metrics", {}).get("validation_int8", {}).get("specificity")
    # The device's own stethoscope only: uploads come from phones and other stethoscopes.
    field = field_results(store.findings_by_verdict(model_sha256=meta.get("tflite_sha256"), source="device",
                                                   clinic=config.clinic_time),
                          expected_specificity=expected, min_calibration=Classifier.MIN_CALIBRATION_RECORDINGS)
    recent = time.strftime("%Y-%m-%d", time.gmtime(time.time() - REFERRAL_WINDOW_DAYS * 86400))
    referred = referrals(store.screenings_by_verdict(model_sha256=meta.get("tflite_sha256"), source="device",
                                                     since=recent, clinic=config.clinic_time),
                         alarm_share=config.device.referral_alarm_share)
    return render_template("device.html", config=config, software=software_version(), model=meta,
                           field=field, referred=referred, referral_days=REFERRAL_WINDOW_DAYS,
                           min_calibration=Classifier.MIN_CALIBRATION_RECORDINGS,
                           expected_specificity=expected, model_path=model_path,
                           free_mb=usage.free / 1e6, total_mb=usage.total / 1e6,
                           status=status, power=_power_view(status), power_advice=POWER_ADVICE,
                           recordings=recordings, n_recordings=n_recordings,
                           clock=_clock_view(time.time(), recordings[0].captured_at if recordings else None),
                           backup=_backup_view(store, time.time(), n_recordings), level=_capture_level_view(store),
                           fhir_send=_fhir_send_view(store, config),
                           poor=_poor_signal_view(store))


def _power_view(status: Mapping[str, tuple[str, str]]) -> Optional[dict]:
    """The supply as the daemon last saw it (device/power.py: under-voltage sags since the daemon
    started), instants as ISO strings for the clinic-time filter; None before a daemon has run.
    ``stopped``: the daemon has stopped since, so "low" is how the supply was then, not now."""
    try:
        power = json.loads(status["power"][0])
    except (KeyError, ValueError):
        return None
    return {"watched": bool(power.get("watched")), "low": bool(power.get("low")), "sags": int(power.get("sags") or 0),
            "stopped": status.get("state", ("",))[0] == "stopped",
            "last_sag": clock.iso_utc(power["last_sag_at"]) if power.get("last_sag_at") else None,
            "since": clock.iso_utc(power["started_at"]) if power.get("started_at") else None}


#: The Device page asks for a whole-device backup when the last is older than this.
BACKUP_DUE_DAYS = 30


def _backup_view(store, now: float, n_recordings: int) -> dict:
    """When the whole device was last backed up (``heartpi backup X.tar`` or the Export page's
    download), and whether one is due: an SD card fails without warning."""
    last = max(filter(None, (store.last_audited("backup.create"),
                             store.last_audited("backup.download", "whole device"))), default=None)
    days = None
    if last:
        days = max(0, int((now - _dt.datetime.fromisoformat(last).timestamp()) // 86400))
    return {"at": last, "days": days,
            "due": n_recordings > 0 and (days is None or days >= BACKUP_DUE_DAYS)}


def _fhir_send_view(store, config) -> Optional[dict]:
    """The last records sent to the region's FHIR server, and a failed attempt since, each an
    audit entry (its ``at`` and ``detail``); with ``fhir.server_url`` set (sent to every hour by
    heartpi-fhir-sync.timer; every page knows its host as ``fhir_server``) how many recordings
    changed since they last reached it, how many deletions it has still to do, and an
    administrator's "send now" still waiting. None when no server is set and none was ever tried."""
    server_url = config.fhir.server_url
    sent, failed = fhir_outcomes(store)
    if sent is None and failed is None and not server_url:
        return None
    waiting = store.count_changed_recordings(store.fhir_sent_through(server_url)[0]) if server_url else None
    deletions = len(store.fhir_deletions(server_url)) if server_url else None
    asked = send_request.pending_send(config.send_request_dir) if server_url else None
    return {"sent": sent, "failed": failed, "waiting": waiting, "deletions": deletions,
            "asked": asked and {"by": asked[0].get("requested_by", "?"), "stuck": asked[1] > SEND_SERVICE_GRACE_S}}


#: The Device page judges the capture gain from this many of the box's newest recordings, and
#: only once it has at least the second number of them.
LEVEL_RECORDINGS, LEVEL_MIN_RECORDINGS = 20, 5


def _capture_level_view(store) -> dict:
    """How loud the box records chests: the median RMS level of its newest recordings (silent ones
    left out), how many were quiet, and whether the gain is set too low, i.e. most of them quiet
    (an abnormal from a quiet recording refers more healthy people: model.verdict)."""
    levels = store.latest_levels(limit=LEVEL_RECORDINGS, above_dbfs=20 * math.log10(SILENCE_RMS))
    median = statistics.median(levels) if levels else None
    return {"recordings": len(levels), "median_dbfs": median, "quiet_dbfs": QUIET_RMS_DBFS,
            "quiet": sum(level < QUIET_RMS_DBFS for level in levels),
            "too_low": len(levels) >= LEVEL_MIN_RECORDINGS and median is not None and median < QUIET_RMS_DBFS}


#: The Device page judges how often the box answers "poor signal" from its newest recordings, and
#: flags more than this share of them (with at least LEVEL_MIN_RECORDINGS): about four times the
#: test split's 6.9 % (tools/eval_band_cut.py, as stored), and above what the quality gate refused
#: of every unheard PhysioNet source set but the 25-recording training-c (5.5-13.6 %; the model
#: card's leave-one-source-out table). A box refusing that often has a cable, chest-piece or room
#: problem, and with three poor signals in a row it refers people it could not judge.
POOR_ALARM_SHARE = 0.25


def _poor_signal_view(store) -> dict:
    """How often the box's newest recordings (the same ones the capture level is judged from) were
    poor signal, the commonest reason and what to do about it, how many ended a person the box could
    not judge, and whether that is too often."""
    recent = store.list_recordings(limit=LEVEL_RECORDINGS, source="device")
    poor = [r for r in recent if r.verdict == "poor_signal"]
    top = Counter(reason for r in poor for reason in r.quality_reasons).most_common(1)
    commonest = top[0][0] if top else None
    return {"recordings": len(recent), "poor": len(poor), "unjudged": sum(ended_unjudged(r.note) for r in recent),
            "advice": REASON_ADVICE.get(commonest, commonest) if commonest else "",
            "too_often": len(recent) >= LEVEL_MIN_RECORDINGS and len(poor) > POOR_ALARM_SHARE * len(recent)}


#: A request older than this means heartpi-clock.service is not picking it up.
CLOCK_SERVICE_GRACE_S = 30.0
#: A "send now" older than this means heartpi-fhir-sync.path is not picking it up (the send itself
#: may take minutes, but it takes the request away before it starts).
SEND_SERVICE_GRACE_S = 60.0


@bp.route("/admin/fhir-send", methods=["POST"])
@roles_required("admin")
def send_now():
    """Ask heartpi-fhir-sync.service to send the FHIR server what changed, now rather than within
    the hour (:mod:`device.send_request`): after a patient withdrew consent, say."""
    config = get_config()
    if not config.fhir.server_url:
        flash("No FHIR server is set for this device (technician: fhir.server_url).", "error")
        return redirect(url_for("admin.device"), code=303)
    try:
        send_request.request_send(config.send_request_dir, requested_by=g.user["email"])
    except StorageError as exc:
        flash(f"Could not ask for a send: {exc}.", "error")
        return redirect(url_for("admin.device"), code=303)
    get_store().audit(actor(), "device.fhir-send-now", "", urllib.parse.urlsplit(config.fhir.server_url).netloc)
    flash("Sending to the FHIR server now; reload this page in a minute to see how it went.", "ok")
    return redirect(url_for("admin.device"), code=303)


def _clock_view(now: float, newest_recording: Optional[str]) -> dict:
    """What the device page says about the clock: its time, why it may be wrong, and what
    became of the last change sent from this page."""
    config = get_config()
    problem = ""
    if not clock.clock_is_plausible(now):
        problem = "The device clock cannot be right: it reads a date before this software existed."
    elif newest_recording and newest_recording > clock.iso_utc(now + 60):
        problem = (f"The device clock is behind its newest recording ({newest_recording[:16].replace('T', ' ')} "
                   "UTC): it was probably set back by a power cut.")
    pending = clock.pending_request(config.clock_dir)
    return {"epoch_ms": int(now * 1000), "text": clock.iso_utc(now)[:19].replace("T", " "), "problem": problem,
            "pending": pending and {"request": pending[0], "stuck": pending[1] > CLOCK_SERVICE_GRACE_S},
            "last": clock.last_result(config.clock_dir)}


@bp.route("/admin/clock", methods=["POST"])
@roles_required("admin")
def set_clock():
    """Send this computer's time to the device (see :mod:`device.clock`). The page's script
    fills ``browser_epoch_ms`` when the button is pressed; without JavaScript the
    administrator types the current UTC time."""
    try:
        reference = _reference_time(request.form)
        sent = clock.request_clock_change(get_config().clock_dir, reference, requested_by=g.user["email"])
    except clock.ClockError as exc:
        flash(f"The device clock was not changed: {exc}.", "error")
        return redirect(url_for("admin.device"), code=303)
    if sent is None:
        flash("The device clock already agrees with this computer's.", "ok")
    else:
        get_store().audit(actor(), "device.clock", "", f"offset {sent.offset_s:+.0f} s")
        flash(f"The device clock is {clock.describe_offset(sent.offset_s)}; it will be set within a few "
              "seconds (reload this page to see it).", "ok")
    return redirect(url_for("admin.device"), code=303)


def _reference_time(form: Mapping[str, str]) -> float:
    """Seconds since the epoch from the form: the browser's clock, else a typed UTC time."""
    browser = form.get("browser_epoch_ms", "").strip()
    if browser:
        try:
            return int(browser) / 1000.0
        except (ValueError, OverflowError):  # not a number; more digits than a float holds
            raise clock.ClockError("the browser sent an unreadable time") from None
    typed = form.get("utc_time", "").strip()
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"):
        try:
            return _dt.datetime.strptime(typed, pattern).replace(tzinfo=_dt.timezone.utc).timestamp()
        except ValueError:
            continue
    raise clock.ClockError("enter the current UTC time as YYYY-MM-DD HH:MM")
