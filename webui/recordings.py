"""Recordings: list, detail (verdict, audio, pictures), assign to a patient, upload, delete."""

from __future__ import annotations

from flask import (Blueprint, abort, flash, g, redirect, render_template, request, send_file,
                   url_for)

import dsp
from device.errors import StorageError
from device.records import FINDINGS, ended_unjudged, screening_verdict
from device.retention import delete_recordings
from device.sites import SITES, site_text
from device.storage import resolve, store_recording
from model.verdict import LEFT_OUT_MARK, REASON_ADVICE, recording_caution

from . import classify, get_config, get_store
from .auth import actor, roles_required
from .exporting import FINDING_CODES
from .paging import current_page, patient_choice
from .pictures import cached, spectrogram_png, waveform_svg

bp = Blueprint("recordings", __name__)
ALL = ("admin", "clinician", "health_worker")
#: the Recordings list's filter for what asked for a referral: abnormal, or the box could not judge
REFER = "refer"


def index():
    return redirect(url_for("recordings.list_recordings"))


def _recording_or_404(rec_id: int):
    rec = get_store().get_recording(rec_id)
    if rec is None:
        abort(404)
    return rec


@bp.route("/recordings")
@roles_required(*ALL)
def list_recordings():
    args = request.args
    verdict = args.get("verdict") or None
    if verdict not in (None, "normal", "abnormal", "poor_signal", REFER):
        verdict = None
    # "refer": every recording that asked for a referral, the box's "could not judge" among them
    referrals = verdict == REFER
    clinic = get_config().clinic_time  # the clinic's days, not UTC's
    filters = dict(verdict=None if referrals else verdict, referrals=referrals,
                   since=clinic.day_bound(args.get("since")), until=clinic.day_bound(args.get("until")),
                   device_id=args.get("device") or None, unassigned=args.get("unassigned") == "1")
    store = get_store()
    page = current_page(store.count_recordings(**filters))
    recs = store.list_recordings(limit=page.size, offset=page.offset, **filters)
    return render_template("recordings.html", recordings=recs, filters=args, page=page,
                           names=store.patient_names([r.patient_id for r in recs]))


@bp.route("/recordings/<int:rec_id>")
@roles_required(*ALL)
def detail(rec_id: int):
    store = get_store()
    rec = _recording_or_404(rec_id)
    patient = store.get_patient(rec.patient_id) if rec.patient_id else None
    if patient:
        store.audit(actor(), "patient.view", f"patient:{patient['id']}", f"recording:{rec.id}")
    else:
        store.audit(actor(), "recording.view", f"recording:{rec.id}")
    mode = request.args.get("listen", DEFAULT_LISTENING)
    if mode not in dsp.LISTENING_MODES and mode != AS_RECORDED:
        mode = DEFAULT_LISTENING
    visit = store.visit_recordings(rec.visit)
    # What the person is referred on: any place's "refer" (as the health worker acted on it).
    person_verdict = screening_verdict(r.verdict for r in visit) if visit else rec.verdict
    # Poor signal again and again: the box itself asked for a referral (device.visits).
    unjudged = person_verdict == "poor_signal" and any(ended_unjudged(r.note) for r in visit or [rec])
    return render_template("recording.html", rec=rec, patient=patient,
                           caution=recording_caution(rec),
                           silent=dsp.signal_quality.SILENCE in rec.quality_reasons, unjudged=unjudged,
                           visit=visit if len(visit) > 1 else [], person_verdict=person_verdict,
                           referring=[r for r in visit if r.verdict == "abnormal"],
                           visit_with_same_patient=sum(r.id != rec.id and r.patient_id == rec.patient_id for r in visit),
                           choice=patient_choice(store, rec.patient_id),
                           advice=[REASON_ADVICE.get(r, r) for r in rec.quality_reasons],
                           finding_text=FINDING_CODES[rec.finding][1] if rec.finding else None,
                           site_text=site_text(rec.site), left_out=LEFT_OUT_MARK in (rec.note or ""),
                           listening_modes=dsp.LISTENING_MODES.values(), listen=mode, as_recorded=AS_RECORDED)


def _recording_file(rec):
    try:
        path = resolve(get_config().recordings_dir, rec.file)
    except StorageError:
        abort(404)
    if not path.exists():
        abort(404)
    return path


#: Browsers refuse to play audio below ~3 kHz (Chromium's minimum), and PhysioNet-style
#: recordings are 2 kHz: the player gets a copy resampled to this rate; downloads get the original.
PLAYBACK_MIN_RATE_HZ = 8000
#: What the player starts with: the heart's band at a listening level (``dsp.listening``), since
#: most staff listen on a laptop or phone, where a recording as captured is faint and muddy.
DEFAULT_LISTENING = "heart"
#: The player's other choice: the recording itself (``audio``).
AS_RECORDED = "recorded"


@bp.route("/recordings/<int:rec_id>/audio.wav")
@roles_required(*ALL)
def audio(rec_id: int):
    """What the page's audio player plays: the recording, resampled when a browser could not."""
    rec = _recording_or_404(rec_id)
    if rec.rate >= PLAYBACK_MIN_RATE_HZ:
        path = _recording_file(rec)
    else:
        path = _derived(rec, "-listen.wav", lambda samples, rate: dsp.wav_bytes(
            dsp.resample(samples, rate, PLAYBACK_MIN_RATE_HZ), PLAYBACK_MIN_RATE_HZ))
    return send_file(path, mimetype="audio/wav", conditional=True, download_name=f"heartpi-{rec.id}.wav")


@bp.route("/recordings/<int:rec_id>/listen/<mode>.wav")
@roles_required(*ALL)
def listen(rec_id: int, mode: str):
    """A listening copy: one filter mode's band at a listening level, 8 kHz (``dsp.listening``)."""
    if mode not in dsp.LISTENING_MODES:
        abort(404)
    rec = _recording_or_404(rec_id)
    path = _derived(rec, f"-listen-{mode}.wav", lambda samples, rate: dsp.wav_bytes(
        dsp.listening_copy(samples, rate, mode), dsp.LISTEN_RATE_HZ))
    return send_file(path, mimetype="audio/wav", conditional=True, download_name=f"heartpi-{rec.id}-{mode}.wav")


@bp.route("/recordings/<int:rec_id>/original.wav")
@roles_required(*ALL)
def original(rec_id: int):
    """The recording exactly as captured or uploaded."""
    rec = _recording_or_404(rec_id)
    return send_file(_recording_file(rec), mimetype="audio/wav", as_attachment=True,
                     download_name=f"heartpi-{rec.id}-original.wav")


def _derived(rec, suffix: str, make):
    """A file computed once from the recording (picture, playable copy), cached by its sha256."""
    path = _recording_file(rec)

    def render():
        samples, rate = dsp.read_wav(path, min_seconds=0.0)
        return make(samples, rate)

    return cached(get_config().cache_dir, rec.sha256, suffix, render)


def _picture(rec_id: int, suffix: str, make, mimetype: str):
    picture = _derived(_recording_or_404(rec_id), suffix, make)
    response = send_file(picture, mimetype=mimetype)
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


@bp.route("/recordings/<int:rec_id>/waveform.svg")
@roles_required(*ALL)
def waveform(rec_id: int):
    # "-pcg": drawn since the stretches left out of the verdict are shaded; the older "-waveform.svg" is not served
    return _picture(rec_id, "-pcg.svg", waveform_svg, "image/svg+xml")


@bp.route("/recordings/<int:rec_id>/spectrogram.png")
@roles_required(*ALL)
def spectrogram(rec_id: int):
    return _picture(rec_id, "-spectrogram.png", spectrogram_png, "image/png")


@bp.route("/recordings/<int:rec_id>/assign", methods=["POST"])
@roles_required(*ALL)
def assign(rec_id: int):
    store = get_store()
    _recording_or_404(rec_id)
    raw = request.form.get("patient_id", "")
    patient_id = int(raw) if raw.isdigit() else None
    if patient_id is not None and store.get_patient(patient_id) is None:
        abort(400, description="That patient does not exist.")
    changed = store.assign_recording(rec_id, patient_id, actor=actor(),
                                     whole_visit=request.form.get("whole_visit") == "1")
    more = f", with {len(changed) - 1} more of the same visit" if len(changed) > 1 else ""
    if patient_id and request.form.get("back") == "patient":  # assigned from the patient's page
        flash(f"Recording {rec_id} assigned{more}.", "ok")
        return redirect(url_for("patients.view", patient_id=patient_id), code=303)
    flash(f"Recording {'assigned' if patient_id else 'unassigned'}{more}.", "ok")
    return redirect(url_for("recordings.detail", rec_id=rec_id), code=303)


@bp.route("/recordings/<int:rec_id>/finding", methods=["POST"])
@roles_required("admin", "clinician")
def finding(rec_id: int):
    """What a clinician found on examining the person recorded: the device's field results
    (Device page) and the known-healthy recordings a technician calibrates it from."""
    _recording_or_404(rec_id)
    value = request.form.get("finding", "")
    if value and value not in FINDINGS:
        abort(400, description="Choose normal, abnormal or not examined.")
    get_store().set_finding(rec_id, value or None, request.form.get("note", ""), actor=actor())
    flash("Clinician's finding saved." if value else "Clinician's finding cleared.", "ok")
    return redirect(url_for("recordings.detail", rec_id=rec_id, _anchor="finding"), code=303)


@bp.route("/recordings/<int:rec_id>/site", methods=["POST"])
@roles_required(*ALL)
def site(rec_id: int):
    """Where on the chest it was recorded: whoever recorded it knows, so every role may set it."""
    _recording_or_404(rec_id)
    value = request.form.get("site", "")
    if value and value not in SITES:
        abort(400, description="Choose one of the four listening places, or not recorded.")
    get_store().set_site(rec_id, value or None, actor=actor())
    flash("Place saved." if value else "Place cleared.", "ok")
    return redirect(url_for("recordings.detail", rec_id=rec_id, _anchor="site"), code=303)


@bp.route("/recordings/<int:rec_id>/delete", methods=["POST"])
@roles_required("admin")
def delete(rec_id: int):
    """Delete a recording for good (file, record, pictures), with a reason for the audit log:
    a test or mistaken recording, a withdrawn consent, a full card after an export."""
    rec = _recording_or_404(rec_id)
    if request.form.get("confirm") != "yes":
        flash("Tick the box to confirm: a deleted recording cannot be brought back.", "error")
        return redirect(url_for("recordings.detail", rec_id=rec_id), code=303)
    config = get_config()
    try:
        deleted = delete_recordings(get_store(), config.recordings_dir, config.cache_dir, [rec],
                                    actor=actor(), reason=request.form.get("reason", ""), from_fhir_server=True)
    except StorageError as exc:
        flash(f"Recording {rec_id} was not deleted: {exc}.", "error")
        return redirect(url_for("recordings.detail", rec_id=rec_id), code=303)
    flash(f"Recording {rec_id} deleted ({deleted.bytes_freed / 1e6:.1f} MB freed).", "ok")
    return redirect(url_for("recordings.list_recordings"), code=303)


@bp.route("/upload", methods=["GET", "POST"])
@roles_required(*ALL)
def upload():
    store = get_store()
    # A link from a patient's page preselects them (?patient_id=); the form's choice wins on POST.
    wanted = (request.form if request.method == "POST" else request.args).get("patient_id", "")
    wanted_id = int(wanted) if wanted.isdigit() else None

    # The place: the clinic protocol's when it names one place only, until the form says otherwise.
    site_value = request.form.get("site", "") if request.method == "POST" else (get_config().only_site or "")
    if site_value and site_value not in SITES:
        abort(400, description="Choose one of the four listening places, or not recorded.")

    def page(error: str = "", status: int = 200):
        return render_template("upload.html", choice=patient_choice(store, wanted_id),
                               selected_id=wanted_id, site=site_value, error=error), status

    if request.method == "GET":
        return page()
    file = request.files.get("file")
    if file is None or not file.filename:
        return page("Choose a recording to upload.", 400)
    data = file.read()
    try:
        audio = dsp.read_audio(data)
    except dsp.BadAudioError as exc:
        store.audit(actor(), "upload.rejected", "", str(exc)[:200])
        return page(f"This file cannot be used: {exc}", 400)
    patient_id = wanted_id if wanted_id is not None and store.get_patient(wanted_id) else None
    # A phone's compressed recording is kept as a 16-bit WAV, and that WAV is what is analysed:
    # every page, export and backup reads WAV, and the sha256 names exactly what the verdict heard.
    kept, samples, rate, how = data, audio.samples, audio.rate, ""
    if audio.decoded:
        kept = dsp.wav_bytes(audio.samples, audio.rate)
        samples, rate = dsp.read_wav(kept)
        how = f" ({audio.format}, kept as WAV)"
    verdict = classify(samples, rate)
    config = get_config()
    try:
        relative, sha = store_recording(config.recordings_dir, kept, min_free_mb=config.storage.min_free_mb,
                                        prefix="upload")
    except StorageError as exc:
        return page(str(exc), 507)
    rec_id = store.add_recording(
        file=relative, sha256=sha, duration_s=samples.size / rate, rate=rate, source="upload",
        device_id=config.device_id, uploaded_by=g.user["id"], patient_id=patient_id,
        note="; ".join(filter(None, (f"uploaded as {file.filename}{how}", verdict.left_out_note)))[:200],
        site=site_value or None, actor=actor(),
        **verdict.stored_fields())
    return redirect(url_for("recordings.detail", rec_id=rec_id), code=303)
