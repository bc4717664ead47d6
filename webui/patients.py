"""Patients: search, create, edit, delete, and one patient's recordings over time."""

from __future__ import annotations

import datetime as _dt

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from device.errors import StorageError
from device.retention import audit_reason, delete_recordings

from . import get_config, get_store
from .auth import actor, roles_required
from .paging import current_page

bp = Blueprint("patients", __name__)
SEXES = ("", "female", "male", "other", "unknown")


def _form() -> tuple[dict, str]:
    form = {k: request.form.get(k, "").strip() for k in ("name", "external_id", "birth_date", "sex", "notes")}
    if not form["name"]:
        return form, "Enter the patient's name."
    if form["sex"] not in SEXES:
        return form, "Choose a valid sex."
    if form["birth_date"]:
        try:
            _dt.date.fromisoformat(form["birth_date"])
        except ValueError:
            return form, "Birth date must look like 2015-04-30."
    return form, ""


@bp.route("/patients")
@roles_required("admin", "clinician", "health_worker")
def list_patients():
    query = request.args.get("q", "").strip()[:100]
    store = get_store()
    page = current_page(store.count_patients(query))
    return render_template("patients.html", patients=store.list_patients(query, page.size, page.offset),
                           q=query, page=page)


@bp.route("/patients/new", methods=["GET", "POST"])
@roles_required("admin", "clinician", "health_worker")
def create():
    if request.method == "POST":
        form, problem = _form()
        if problem:
            return render_template("patient_form.html", form=form, error=problem, sexes=SEXES), 400
        try:
            pid = get_store().add_patient(actor=actor(), **form)
        except Exception as exc:  # unique external id
            if "UNIQUE" not in str(exc):
                raise
            return render_template("patient_form.html", form=form, sexes=SEXES,
                                   error="Another patient already has this patient number."), 400
        flash("Patient created.", "ok")
        return redirect(url_for("patients.view", patient_id=pid), code=303)
    return render_template("patient_form.html", form={}, sexes=SEXES)


@bp.route("/patients/<int:patient_id>")
@roles_required("admin", "clinician", "health_worker")
def view(patient_id: int):
    store = get_store()
    patient = store.get_patient(patient_id)
    if patient is None:
        abort(404)
    store.audit(actor(), "patient.view", f"patient:{patient_id}")
    unassigned = store.list_recordings(unassigned=True, limit=50)
    return render_template("patient.html", patient=patient,
                           recordings=store.list_recordings(patient_id=patient_id, limit=1000),
                           unassigned=unassigned, visit_sizes=store.visit_sizes([r.visit for r in unassigned], unassigned=True))


@bp.route("/patients/<int:patient_id>/edit", methods=["GET", "POST"])
@roles_required("admin", "clinician")
def edit(patient_id: int):
    store = get_store()
    patient = store.get_patient(patient_id)
    if patient is None:
        abort(404)
    if request.method == "POST":
        form, problem = _form()
        if problem:
            return render_template("patient_form.html", form=form, error=problem, sexes=SEXES,
                                   patient=patient), 400
        store.update_patient(patient_id, actor=actor(), **form)
        flash("Patient updated.", "ok")
        return redirect(url_for("patients.view", patient_id=patient_id), code=303)
    return render_template("patient_form.html", form=patient, sexes=SEXES, patient=patient)


@bp.route("/patients/<int:patient_id>/delete", methods=["POST"])
@roles_required("admin")
def delete(patient_id: int):
    """Delete a patient, for instance when consent is withdrawn; their recordings are deleted
    too when asked, else kept unassigned. Each step is in the audit log, without personal data."""
    store = get_store()
    if store.get_patient(patient_id) is None:
        abort(404)
    back = redirect(url_for("patients.view", patient_id=patient_id), code=303)
    if request.form.get("confirm") != "yes":
        flash("Tick the box to confirm: a deleted patient cannot be brought back.", "error")
        return back
    try:
        reason = audit_reason(request.form.get("reason", ""), "the patient is")
    except StorageError as exc:
        flash(f"{str(exc)[:1].upper()}{str(exc)[1:]}.", "error")
        return back
    deleted = 0
    if request.form.get("with_recordings") == "yes":
        config = get_config()
        recordings = store.list_recordings(patient_id=patient_id, limit=1 << 40)
        try:
            deleted = delete_recordings(store, config.recordings_dir, config.cache_dir, recordings,
                                        actor=actor(), reason=f"patient {patient_id} deleted: {reason}",
                                        from_fhir_server=True).recordings
        except StorageError as exc:
            flash(f"The patient was not deleted: their recordings could not be deleted ({exc}).", "error")
            return back
    kept = store.delete_patient(patient_id, actor=actor(), reason=reason)
    flash(f"Patient deleted; {deleted} recording(s) deleted, {kept} kept without a patient.", "ok")
    return redirect(url_for("patients.list_patients"), code=303)
