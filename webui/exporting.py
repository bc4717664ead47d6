"""Record exports shared by the web page and the command line: CSV and FHIR R4 JSON.

Records leave a device as FHIR resources (Patient, Observation with the verdict, Media with
the audio, and a second Observation with the clinician's finding once one is entered) so an
existing FHIR server can be the central store: a ``collection`` Bundle to keep or read, and a
``transaction`` Bundle to POST to a server's base URL, which files each resource under an id
that names the device, so sending the same records again updates them instead of copying them.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from device.clinic_time import ClinicTime
from device.records import Recording, RecordStore
from device.sites import SITES, site_text
from device.storage import resolve
from model.verdict import recording_caution

CSV_COLUMNS = ("recording_id", "captured_at", "device_id", "source", "patient_id",
               "patient_number", "patient_name", "verdict", "p_abnormal", "threshold",
               "heart_rate_bpm", "quality_reasons", "duration_s", "rate", "overflows",
               "model_sha256", "software_version", "sha256", "file", "clinician_finding",
               "clinician_note", "finding_by", "finding_at", "site", "captured_local", "visit", "caution",
               "level_dbfs", "note")
CODE_SYSTEM = "https://heartpi.invalid/fhir/CodeSystem/heart-sound-screening"
VERDICT_TEXT = {"normal": "Normal", "abnormal": "Abnormal: refer", "poor_signal": "Poor signal: record again"}
#: The clinician's finding (``Recording.finding``): its code in the export, and the words both
#: the export and the recording's page use.
FINDING_CODES = {"normal": ("heart-normal", "Heart normal on examination"),
                 "abnormal": ("heart-disease", "Heart disease found")}


def select(store: RecordStore, *, patient_id: Optional[int] = None, since: Optional[str] = None,
           until: Optional[str] = None, referrals_only: bool = False) -> list[Recording]:
    """The recordings to export, newest first. ``referrals_only``: those that asked for a
    referral, abnormal or "could not judge" (``device.records.UNJUDGED_NOTE``), the list a clinic
    sends on to the clinician who will see the people."""
    return store.list_recordings(patient_id=patient_id, since=since, until=until, limit=1_000_000,
                                 referrals=referrals_only)


def safe_cell(value) -> str:
    """Spreadsheet-safe cell: text starting with = + - @ is prefixed so it is not a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _caution_sentence(rec: Recording) -> str:
    """The recording page's caution for the CSV's column and the Observation's note ("": none)."""
    found = recording_caution(rec)
    return found.sentence if found else ""


def to_csv(store: RecordStore, recordings: Iterable[Recording], *, clinic: ClinicTime = ClinicTime()) -> str:
    """One row per recording. ``captured_at`` is the stored UTC instant; ``captured_local`` the
    same moment with the clinic's offset, as its staff wrote it down (both ISO 8601, so a
    spreadsheet sorts either). New columns go at the end, so existing readers keep working."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    patients: dict = {}
    for rec in recordings:
        patient = patients.setdefault(rec.patient_id, store.get_patient(rec.patient_id) if rec.patient_id else None)
        row = (rec.id, rec.captured_at, rec.device_id, rec.source, rec.patient_id,
               patient["external_id"] if patient else "", patient["name"] if patient else "",
               rec.verdict, "" if rec.p_abnormal is None else f"{rec.p_abnormal:.4f}",
               "" if rec.threshold is None else f"{rec.threshold:.4f}",
               "" if rec.heart_rate_bpm is None else f"{rec.heart_rate_bpm:.1f}",
               ";".join(rec.quality_reasons), f"{rec.duration_s:.2f}", rec.rate, rec.overflows,
               rec.model_sha256, rec.software_version, rec.sha256, rec.file, rec.finding or "",
               rec.finding_note, _entered_by(rec), rec.finding_at or "", rec.site or "", clinic.iso(rec.captured_at),
               rec.visit or "", _caution_sentence(rec),
               "" if rec.level_dbfs is None else round(rec.level_dbfs, 1),  # a number: not "'-55.0"
               rec.note)
        writer.writerow([safe_cell(v) if isinstance(v, str) else v for v in row])
    return out.getvalue()


def _patient_resource(patient: dict, device_id: str) -> dict:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": f"patient-{patient['id']}",
                "identifier": [{"system": f"urn:heartpi:{device_id}:patient", "value": str(patient["id"])}],
                "name": [{"text": patient["name"]}]}
    if patient.get("external_id"):
        resource["identifier"].append({"system": "urn:heartpi:patient-number", "value": patient["external_id"]})
    if patient.get("birth_date"):
        resource["birthDate"] = patient["birth_date"]
    if patient.get("sex"):
        resource["gender"] = patient["sex"]
    return resource


def _media_resource(rec: Recording, recordings_dir: Optional[Path], include_audio: bool) -> dict:
    # Attachment.hash is SHA-1 in FHIR R4; our sha256 travels as the Media identifier instead.
    content: dict[str, Any] = {"contentType": "audio/wav", "title": f"heartpi-{rec.id}.wav",
                               "creation": rec.captured_at}
    if include_audio and recordings_dir is not None:
        path = resolve(recordings_dir, rec.file)
        if path.exists():
            data = path.read_bytes()
            content["data"] = base64.b64encode(data).decode()
            content["size"] = len(data)
    resource = {"resourceType": "Media", "id": f"media-{rec.id}", "status": "completed",
                "identifier": [{"system": "urn:heartpi:sha256", "value": rec.sha256}],
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/media-type",
                                     "code": "audio", "display": "Audio"}]},
                "createdDateTime": rec.captured_at, "deviceName": f"HeartPi {rec.device_id}",
                "duration": round(rec.duration_s, 3), "content": content}
    if rec.patient_id:
        resource["subject"] = {"reference": f"Patient/patient-{rec.patient_id}"}
    return resource


def _observation_resource(rec: Recording) -> dict:
    components = []
    if rec.p_abnormal is not None:
        components.append({"code": {"text": "Probability of abnormal heart sound (model output)"},
                           "valueQuantity": {"value": round(rec.p_abnormal, 4), "unit": "1",
                                             "system": "http://unitsofmeasure.org", "code": "1"}})
    if rec.heart_rate_bpm is not None:
        components.append({"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                                                "display": "Heart rate"}]},
                           "valueQuantity": {"value": round(rec.heart_rate_bpm, 1), "unit": "/min",
                                             "system": "http://unitsofmeasure.org", "code": "/min"}})
    resource = _exam_observation(
        rec, f"observation-{rec.id}", ("screening-verdict", "Heart sound screening verdict"),
        "Heart sound screening (HeartPi; screening aid, not a diagnosis)",
        (rec.verdict or "none", VERDICT_TEXT.get(rec.verdict or "", "No verdict")))
    resource.update({
        "effectiveDateTime": rec.captured_at,
        "method": {"text": f"HeartPi software {rec.software_version}, model sha256 {rec.model_sha256}"},
        "device": {"display": f"HeartPi {rec.device_id}"},
        "derivedFrom": [{"reference": f"Media/media-{rec.id}"}],
        "note": [{"text": " ".join(filter(None, (
            "Screening aid, not a diagnosis.",
            f"Signal quality: {', '.join(rec.quality_reasons)}." if rec.quality_reasons else "",
            _caution_sentence(rec),
            f"Note: {rec.note}." if rec.note else "")))}],
    })
    if components:
        resource["component"] = components
    if rec.site:
        resource["bodySite"] = {"coding": [{"system": CODE_SYSTEM, "code": f"{rec.site}-area",
                                            "display": SITES[rec.site].label}], "text": site_text(rec.site)}
    return resource


def _exam_observation(rec: Recording, resource_id: str, code: tuple[str, str], text: str,
                      value: tuple[str, str]) -> dict:
    """What both Observations share: an exam, coded in our code system, with a coded value
    (code, display) and the recording's patient as subject."""
    resource = {
        "resourceType": "Observation", "id": resource_id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "exam", "display": "Exam"}]}],
        "code": {"coding": [{"system": CODE_SYSTEM, "code": code[0], "display": code[1]}], "text": text},
        "valueCodeableConcept": {"coding": [{"system": CODE_SYSTEM, "code": value[0], "display": value[1]}],
                                 "text": value[1]},
    }
    if rec.patient_id:
        resource["subject"] = {"reference": f"Patient/patient-{rec.patient_id}"}
    return resource


def _entered_by(rec: Recording) -> str:
    """Who entered the finding: the account's email (the store keeps ``user:<id>:<email>``)."""
    return (rec.finding_by or "").split(":", 2)[-1]


def _finding_resource(rec: Recording) -> dict:
    """The clinician's finding after a screening, as its own Observation: it is the truth the
    verdict is judged against, so a central server can count the device's field results."""
    resource = _exam_observation(
        rec, f"finding-{rec.id}", ("clinician-finding", "Clinician's heart examination after screening"),
        f"Clinician's heart examination after HeartPi recording {rec.id}", FINDING_CODES[rec.finding or ""])
    resource.update({"issued": rec.finding_at, "performer": [{"display": _entered_by(rec)}]})
    if rec.finding_note:
        resource["note"] = [{"text": rec.finding_note}]
    return resource


def _encounter_resource(visit: str, recs: list[Recording]) -> dict:
    """One person's visit (the protocol's places recorded one after another) as an ambulatory
    Encounter, which its recordings' Media and Observations name, so a central server sees the
    four places of one screening together."""
    resource = {"resourceType": "Encounter", "id": f"visit-{visit}", "status": "finished",
                "identifier": [{"system": "urn:heartpi:visit", "value": visit}],
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                          "display": "ambulatory"},
                "type": [{"text": "Heart-sound screening (HeartPi)"}],
                "period": {"start": min(r.captured_at for r in recs), "end": max(r.captured_at for r in recs)}}
    patients = {r.patient_id for r in recs}
    if len(patients) == 1 and None not in patients:
        resource["subject"] = {"reference": f"Patient/patient-{patients.pop()}"}
    return resource


def to_fhir_bundle(store: RecordStore, recordings: Iterable[Recording], *, device_id: str,
                   recordings_dir: Optional[Path] = None, include_audio: bool = True) -> dict:
    """A FHIR R4 ``collection`` Bundle of the recordings, their patients and their visits.

    A visit's Encounter is made from all its recordings, whichever of them the export holds
    (a range ending mid-visit, referrals only): a server that files it by id would otherwise
    have its period and subject shrunk by a narrower export sent after a wider one."""
    recordings = list(recordings)
    visits = {visit: store.visit_recordings(visit) for visit in dict.fromkeys(r.visit for r in recordings if r.visit)}
    entries, seen, seen_visits = [], set(), set()
    for rec in recordings:
        if rec.patient_id and rec.patient_id not in seen:
            patient = store.get_patient(rec.patient_id)
            if patient:
                seen.add(rec.patient_id)
                entries.append(_patient_resource(patient, device_id))
        if rec.visit and rec.visit not in seen_visits:
            seen_visits.add(rec.visit)
            entries.append(_encounter_resource(rec.visit, visits[rec.visit]))
        made = [_media_resource(rec, recordings_dir, include_audio), _observation_resource(rec)]
        if rec.finding:
            made.append(_finding_resource(rec))
        for resource in made:
            if rec.visit:
                resource["encounter"] = {"reference": f"Encounter/visit-{rec.visit}"}
        entries += made
    base = collection_base(device_id)
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in entries]}


def collection_base(device_id: str) -> str:
    """Where a collection's entries say they are: ``https://heartpi.invalid/devices/<device>/fhir``
    (``.invalid`` is reserved: no server answers there). A RESTful base is what lets a reader
    resolve the resources' relative references (``Patient/patient-1``) inside the Bundle, by FHIR's
    rule; the ``urn:uuid:heartpi-…`` names used until 2026-12-01 were no UUIDs, and left them
    unresolved."""
    return f"https://heartpi.invalid/devices/{device_id_prefix(device_id).rstrip('-')}/fhir"


#: The audit actions of ``heartpi export --send``: records that reached the region's FHIR server,
#: and an attempt that did not (neither name a prefix of the other: the audit log filters by prefix)
FHIR_SENT, FHIR_SEND_FAILED = "export.fhir-sent", "export.fhir-send-failed"


def fhir_outcomes(store: RecordStore) -> tuple[Optional[dict], Optional[dict]]:
    """The audit entries of the last send a FHIR server took and of the last failed attempt
    since it (None for either: there was none)."""
    sent = next(iter(store.audit_entries(limit=1, action=FHIR_SENT)), None)
    failed = next(iter(store.audit_entries(limit=1, action=FHIR_SEND_FAILED)), None)
    if failed is not None and sent is not None and failed["id"] < sent["id"]:
        failed = None  # a later send went through
    return sent, failed

#: FHIR's id: 1 to 64 of these characters.
FHIR_ID = re.compile(r"[A-Za-z0-9.-]{1,64}")
#: The device's part of a transaction's ids stays this short, so the longest id of ours
#: ("observation-" and a 10-digit recording number) still fits FHIR's 64 characters.
DEVICE_ID_CHARS = 32
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://heartpi.invalid/fhir")


def device_id_prefix(device_id: str) -> str:
    """The part of a transaction's resource ids that names the device, e.g. ``clinic-3-``. A
    device id FHIR cannot carry as it is (other characters, or longer than
    :data:`DEVICE_ID_CHARS`) is shortened and given a hash of itself, so two devices still differ."""
    cleaned = re.sub(r"[^A-Za-z0-9.-]+", "-", device_id).strip("-.") or "device"
    if cleaned != device_id or len(cleaned) > DEVICE_ID_CHARS:
        digest = hashlib.sha256(device_id.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[:DEVICE_ID_CHARS - 9].rstrip('-.')}-{digest}"
    return f"{cleaned}-"


#: The resources the export makes of a device's records, by the names it gives them before the
#: transaction's device prefix: what a deletion (``device.records``, schema 11) names.
_LOCAL_RESOURCE = re.compile(r"(Media/media|Observation/observation|Observation/finding|Patient/patient|"
                             r"Encounter/visit)-([A-Za-z0-9.]+)")


def on_device(store: RecordStore, resource: str) -> bool:
    """Whether the device's export holds ``resource`` (``Media/media-5``) now: a deletion of it
    is void once it was made again (SQLite gives the newest recording's or patient's number to
    the next one when the newest is deleted; a finding cleared may be given anew). A patient is
    exported with their recordings only: one without any is not held, or a new patient with a
    deleted one's number would keep the deleted one's record on the server."""
    match = _LOCAL_RESOURCE.fullmatch(resource)
    if not match:
        return False
    kind, key = match.groups()
    if kind == "Encounter/visit":
        return bool(store.visit_recordings(key))
    if not key.isdigit():
        return False
    if kind == "Patient/patient":
        return store.count_recordings(patient_id=int(key)) > 0
    rec = store.get_recording(int(key))
    return rec is not None and (kind != "Observation/finding" or rec.finding is not None)


def to_fhir_deletions(resources: Iterable[str], *, device_id: str) -> dict:
    """A transaction Bundle that DELETEs these resources (the device's names, as
    :func:`to_fhir_bundle` gives them) under the ids :func:`to_fhir_transaction` PUT them at."""
    prefix = device_id_prefix(device_id)
    entries = []
    for resource in resources:
        kind, _, local = resource.partition("/")
        if not FHIR_ID.fullmatch(prefix + local):
            raise ValueError(f"FHIR id {prefix + local!r} is not valid")  # a bug of ours, not the user's
        entries.append({"request": {"method": "DELETE", "url": f"{kind}/{prefix}{local}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _renamed_references(node, renamed: dict[str, str]) -> None:
    """Replace, in place, every ``reference`` in ``node`` (a resource or part of one) that
    ``renamed`` knows."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in renamed:
                node[key] = renamed[value]
            else:
                _renamed_references(value, renamed)
    elif isinstance(node, list):
        for item in node:
            _renamed_references(item, renamed)


def to_fhir_transaction(store: RecordStore, recordings: Iterable[Recording], *, device_id: str,
                        recordings_dir: Optional[Path] = None, include_audio: bool = True) -> dict:
    """The same resources as :func:`to_fhir_bundle`, as a FHIR R4 ``transaction`` Bundle for a
    central FHIR server (POSTed to its base URL, e.g. HAPI FHIR's ``/fhir``).

    Each entry is a ``PUT`` of its resource under an id that starts with the device's
    (:func:`device_id_prefix`: every device numbers its patients and recordings from 1), and
    references between them are renamed alike. So the server stores Patients, Media and
    Observations (a ``collection`` would be stored as one Bundle, its contents unread), several
    devices never overwrite each other, and sending a record again (say after a clinician's
    finding) updates it rather than adding a copy.
    """
    collection = to_fhir_bundle(store, recordings, device_id=device_id, recordings_dir=recordings_dir,
                                include_audio=include_audio)
    prefix = device_id_prefix(device_id)
    resources = [entry["resource"] for entry in collection["entry"]]
    renamed = {f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{prefix}{r['id']}" for r in resources}
    entries = []
    for resource in resources:
        url = renamed[f"{resource['resourceType']}/{resource['id']}"]
        _renamed_references(resource, renamed)  # the collection's own, made for this export alone
        resource["id"] = url.split("/", 1)[1]
        if not FHIR_ID.fullmatch(resource["id"]):
            raise ValueError(f"FHIR id {resource['id']!r} is not valid")  # a bug of ours, not the user's
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, url)}", "resource": resource,
                        "request": {"method": "PUT", "url": url}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def fhir_json(bundle: dict) -> str:
    return json.dumps(bundle, indent=1)
