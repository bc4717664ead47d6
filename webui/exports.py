"""Export routes: CSV and FHIR R4 of a patient or a date range; admin backups (database, whole device)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import tempfile
import time
from pathlib import Path

from flask import Blueprint, Response, abort, after_this_request, render_template, request, send_file

from . import get_config, get_store
from .auth import actor, roles_required
from .exporting import fhir_json, select, to_csv, to_fhir_bundle, to_fhir_transaction
from .paging import patient_choice

bp = Blueprint("exports", __name__)


def _selection():
    store = get_store()
    raw = request.args.get("patient_id", "")
    patient_id = int(raw) if raw.isdigit() else None
    if raw and (patient_id is None or store.get_patient(patient_id) is None):
        abort(404)
    since = request.args.get("since") or None
    until = request.args.get("until") or None
    try:
        first, before = get_config().clinic_time.day_range(since, until)
    except ValueError as exc:
        abort(400, f"{exc}.")
    referrals_only = request.args.get("referrals") == "1"
    recs = select(store, patient_id=patient_id, since=first, until=before, referrals_only=referrals_only)
    what = f"patient:{patient_id}" if patient_id else f"range:{since or '-'}..{until or '-'}"
    return recs, what + (" referrals only" if referrals_only else ""), patient_id


@bp.route("/export")
@roles_required("admin", "clinician")
def form():
    return render_template("export.html", choice=patient_choice(get_store()))


@bp.route("/export/records.csv")
@roles_required("admin", "clinician")
def export_csv():
    recs, what, patient_id = _selection()
    get_store().audit(actor(), "export.csv", f"patient:{patient_id}" if patient_id else "", what)
    return Response(to_csv(get_store(), recs, clinic=get_config().clinic_time), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=heartpi-records.csv"})


@bp.route("/export/fhir.json")
@roles_required("admin", "clinician")
def export_fhir():
    return _fhir_download(to_fhir_bundle, "export.fhir", "heartpi-fhir.json")


@bp.route("/export/fhir-transaction.json")
@roles_required("admin", "clinician")
def export_fhir_transaction():
    """The same records as a transaction, for a FHIR server (``exporting.to_fhir_transaction``)."""
    return _fhir_download(to_fhir_transaction, "export.fhir-transaction", "heartpi-fhir-transaction.json")


def _include_audio() -> bool:
    """Whether the FHIR export carries the audio: the last ``audio`` value decides (the Export
    page sends a hidden 0, then its checkbox's 1 when ticked; an unticked box sends nothing, so
    without the hidden 0 the audio went out anyway); none at all, as from a link: yes."""
    values = request.args.getlist("audio")
    return not values or values[-1] == "1"


def _fhir_download(make_bundle, action: str, filename: str) -> Response:
    recs, what, patient_id = _selection()
    config = get_config()
    bundle = make_bundle(get_store(), recs, device_id=config.device_id, recordings_dir=config.recordings_dir,
                         include_audio=_include_audio())
    get_store().audit(actor(), action, f"patient:{patient_id}" if patient_id else "", what)
    return Response(fhir_json(bundle), mimetype="application/fhir+json",
                    headers={"Content-Disposition": f"attachment; filename={filename}"})


@bp.route("/export/backup.sqlite3")
@roles_required("admin")
def backup():
    fd, name = tempfile.mkstemp(prefix="heartpi-backup-", suffix=".sqlite3")
    os.close(fd)
    get_store().backup(name)
    get_store().audit(actor(), "backup.download")

    @after_this_request
    def cleanup(response):
        try:
            os.unlink(name)
        except OSError:
            pass
        return response

    return send_file(name, mimetype="application/vnd.sqlite3", as_attachment=True,
                     download_name="heartpi-backup.sqlite3")


#: A snapshot older than this was left by a process killed before streaming began.
STALE_SNAPSHOT_S = 3600


@bp.route("/export/backup.tar")
@roles_required("admin")
def backup_archive():
    """The whole device (records, recordings, models) as ``heartpi restore`` reads it, streamed:
    the database snapshot is the only copy made on the SD card, and it goes once archived."""
    from device.backup import BackupArchive

    config = get_config()
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in config.cache_dir.glob(".backup-*.sqlite3"):
        with contextlib.suppress(OSError):  # another download may be removing it right now
            if time.time() - stale.stat().st_mtime > STALE_SNAPSHOT_S:
                stale.unlink()
    fd, name = tempfile.mkstemp(prefix=".backup-", suffix=".sqlite3", dir=config.cache_dir)
    os.close(fd)
    snapshot = Path(name)
    try:
        archive = BackupArchive(config, get_store(), snapshot)
    except BaseException:
        snapshot.unlink(missing_ok=True)
        raise
    get_store().audit(actor(), "backup.download", "", f"whole device: {archive.recordings} recordings")

    def stream():
        try:
            yield from archive.chunks()
        finally:
            snapshot.unlink(missing_ok=True)

    device = re.sub(r"[^A-Za-z0-9._-]+", "-", config.device_id) or "heartpi"
    filename = f"heartpi-{device}-{_dt.date.today().isoformat()}.tar"
    return Response(stream(), mimetype="application/x-tar",
                    headers={"Content-Disposition": f"attachment; filename={filename}"})
