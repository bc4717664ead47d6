"""Clinicians' findings: entered on a recording's page, kept audited, exported, and turned into
the device's own field results on the Device page."""

from __future__ import annotations

import csv
import io
import time

import pytest

from webui.field import MIN_CASES, field_results, referrals


@pytest.fixture
def model_sha():
    from model import Classifier

    return Classifier.load().sha256


def _add(store, n, verdict, finding, sha, source="device", first=0):
    ids = []
    for i in range(first, first + n):
        rec_id = store.add_recording(file=f"{verdict}-{finding}-{sha[:4]}-{source}-{i}.wav", sha256="0" * 64,
                                     duration_s=20.0, rate=48000, source=source, device_id="box", verdict=verdict,
                                     p_abnormal=0.9 if verdict == "abnormal" else 0.1, model_sha256=sha)
        if finding:
            store.set_finding(rec_id, finding, actor="user:2:doc@clinic.test")
        ids.append(rec_id)
    return ids


def test_a_clinician_enters_changes_and_clears_a_finding(client, auth, web_store, model_sha):
    rec_id = _add(web_store, 1, "abnormal", None, model_sha)[0]
    auth.login("clinician")
    page = client.get(f"/recordings/{rec_id}").get_data(as_text=True)
    assert "No clinician's finding yet" in page and 'id="finding-form"' in page
    token = auth.csrf(f"/recordings/{rec_id}")
    response = client.post(f"/recordings/{rec_id}/finding", data={
        "csrf_token": token, "finding": "abnormal", "note": "echo: mitral regurgitation"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/recordings/{rec_id}#finding")
    rec = web_store.get_recording(rec_id)
    assert (rec.finding, rec.finding_note) == ("abnormal", "echo: mitral regurgitation")
    assert rec.finding_by.endswith(":clinician@clinic.test") and rec.finding_at
    page = client.get(f"/recordings/{rec_id}").get_data(as_text=True)
    assert "Heart disease found" in page and "echo: mitral regurgitation" in page and "clinician@clinic.test" in page
    client.post(f"/recordings/{rec_id}/finding", data={"csrf_token": token, "finding": "normal", "note": ""})
    client.post(f"/recordings/{rec_id}/finding", data={"csrf_token": token, "finding": "", "note": "ignored"})
    rec = web_store.get_recording(rec_id)
    assert (rec.finding, rec.finding_note, rec.finding_by, rec.finding_at) == (None, "", None, None)
    trail = [e["detail"] for e in web_store.audit_entries(limit=10, action="recording.finding")]
    assert trail == ["normal -> None", "abnormal -> normal", "None -> abnormal"]  # newest first, no note
    assert client.post(f"/recordings/{rec_id}/finding", data={"csrf_token": token, "finding": "maybe"}).status_code == 400
    assert client.post("/recordings/999999/finding", data={"csrf_token": token, "finding": "normal"}).status_code == 404


def test_health_workers_see_the_finding_but_cannot_enter_one(client, auth, web_store, model_sha):
    rec_id = _add(web_store, 1, "abnormal", "abnormal", model_sha)[0]
    pid = web_store.add_patient(name="Amina", actor="t")
    web_store.assign_recording(rec_id, pid, actor="t")
    auth.login("health_worker")
    assert "<td>heart disease</td>" in client.get(f"/patients/{pid}").get_data(as_text=True)
    page = client.get(f"/recordings/{rec_id}").get_data(as_text=True)
    assert "Heart disease found" in page and 'id="finding-form"' not in page
    response = client.post(f"/recordings/{rec_id}/finding", data={
        "csrf_token": auth.csrf(f"/recordings/{rec_id}"), "finding": "normal"})
    assert response.status_code == 403 and web_store.get_recording(rec_id).finding == "abnormal"


def test_findings_travel_in_the_csv_export(client, auth, web_store, model_sha):
    rec_id = _add(web_store, 1, "abnormal", None, model_sha)[0]
    web_store.set_finding(rec_id, "abnormal", "=cmd|' /C calc'!A0", actor="user:2:doc@clinic.test")
    auth.login("clinician")
    rows = list(csv.DictReader(io.StringIO(client.get("/export/records.csv").get_data(as_text=True))))
    assert rows[0]["clinician_finding"] == "abnormal" and rows[0]["finding_by"] == "doc@clinic.test"
    assert rows[0]["clinician_note"].startswith("'=")  # spreadsheet-safe


def test_findings_travel_in_the_fhir_export_as_their_own_observation(client, auth, web_store, model_sha):
    import html
    import json

    patient = web_store.add_patient(name="Ama Owusu", external_id="AO-1", actor="t")
    examined, referred_healthy, unexamined = _add(web_store, 3, "abnormal", None, model_sha)
    for rec_id in (examined, referred_healthy, unexamined):
        web_store.assign_recording(rec_id, patient, actor="t")
    web_store.set_finding(examined, "abnormal", "echo: mitral regurgitation", actor="user:2:doc@clinic.test")
    web_store.set_finding(referred_healthy, "normal", actor="user:2:doc@clinic.test")
    auth.login("clinician")
    bundle = json.loads(client.get(f"/export/fhir.json?patient_id={patient}").data)
    resources = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]}
    assert f"finding-{unexamined}" not in resources and f"observation-{unexamined}" in resources
    disease, healthy = resources[f"finding-{examined}"], resources[f"finding-{referred_healthy}"]
    assert disease["resourceType"] == "Observation" and disease["code"]["coding"][0]["code"] == "clinician-finding"
    assert disease["valueCodeableConcept"]["coding"][0]["code"] == "heart-disease"
    assert healthy["valueCodeableConcept"]["coding"][0]["code"] == "heart-normal" and "note" not in healthy
    assert disease["note"] == [{"text": "echo: mitral regurgitation"}]
    assert disease["performer"] == [{"display": "doc@clinic.test"}]
    assert disease["subject"] == {"reference": f"Patient/patient-{patient}"}
    assert disease["issued"] == web_store.get_recording(examined).finding_at
    for rec_id, finding in ((examined, disease), (referred_healthy, healthy)):  # the page's own words
        page = html.unescape(client.get(f"/recordings/{rec_id}").get_data(as_text=True))
        assert finding["valueCodeableConcept"]["text"] in page


def test_the_device_page_shows_field_results_and_asks_for_calibration(client, auth, web_store, model_sha):
    _add(web_store, 9, "abnormal", "abnormal", model_sha)
    _add(web_store, 3, "normal", "abnormal", model_sha)
    _add(web_store, 10, "normal", "normal", model_sha)
    _add(web_store, 15, "abnormal", "normal", model_sha)   # healthy hearts referred: a shifted stethoscope
    _add(web_store, 2, "poor_signal", "normal", model_sha)
    _add(web_store, 5, "abnormal", "normal", "f" * 64)     # scored by another model: not counted
    _add(web_store, 4, "normal", None, model_sha)          # not examined: not counted
    _add(web_store, 6, "abnormal", "normal", model_sha, source="upload")  # a phone's: not this device's
    auth.login("health_worker")
    page = " ".join(client.get("/device").get_data(as_text=True).split())
    assert "9 of 12" in page and "75 %" in page            # sensitivity
    assert "10 of 25" in page and "40 %" in page           # specificity
    assert "9 of 24" in page                               # referrals confirmed
    assert "39 examined people, of whom 2 had only poor-signal recordings" in page
    assert 'id="calibration-due"' in page and "heartpi model calibrate" in page


def test_the_device_page_warns_when_most_people_screened_are_referred(client, auth, web_store, model_sha):
    """No clinician's finding is needed to notice a stethoscope the model calls most healthy hearts
    abnormal on: the share referred is enough, once it is clearly above the configured share."""
    auth.login("health_worker")
    page = " ".join(client.get("/device").get_data(as_text=True).split())
    assert "No one has been screened on this device with the model in use in the last 90 days." in page
    _add(web_store, 8, "abnormal", None, model_sha)
    _add(web_store, 2, "normal", None, model_sha)
    _add(web_store, 1, "poor_signal", None, model_sha)
    _add(web_store, 9, "normal", None, "f" * 64)                   # another model's: not counted
    _add(web_store, 9, "abnormal", None, model_sha, source="upload")  # a phone's: not this device's
    for i in range(9):  # referred half a year ago: before the last 90 days
        web_store.add_recording(file=f"old-{i}.wav", sha256="0" * 64, duration_s=20.0, rate=48000, source="device",
                                device_id="box", verdict="abnormal", p_abnormal=0.9, model_sha256=model_sha,
                                captured_at=time.strftime("%Y-%m-%dT09:00:00+00:00",
                                                          time.gmtime(time.time() - 180 * 86400)))
    page = " ".join(client.get("/device").get_data(as_text=True).split())
    assert ("Of 10 people screened on this device with the model in use in the last 90 days, 8 were referred "
            "(80 %, 95% interval "
            "49–94 %); 1 more had only poor-signal recordings." in page)
    assert 'id="too-many-referred"' not in page  # eight of ten: the interval still reaches 50 %
    _add(web_store, 12, "abnormal", None, model_sha, first=8)
    page = " ".join(client.get("/device").get_data(as_text=True).split())
    assert "20 were referred (91 %" in page and 'id="too-many-referred"' in page
    assert "refers more than 50 % of the people it screens" in page and "--confirmed-normal" in page


def test_referral_share_arithmetic():
    assert referrals({"abnormal": 10}, alarm_share=0.5).too_many          # ten of ten
    assert not referrals({"abnormal": 8, "normal": 2}, alarm_share=0.5).too_many
    assert not referrals({"abnormal": 9}, alarm_share=0.5).too_many       # nine people: too few to judge
    assert not referrals({"abnormal": 10}, alarm_share=1.0).too_many      # 1 never warns
    shown = referrals({"abnormal": 30, "normal": 70, "poor_signal": 4}, alarm_share=0.2)
    assert shown.referred.value == 0.3 and shown.poor_signal == 4 and shown.too_many  # 95%: 22-40 %
    assert not referrals({}, alarm_share=0.5).referred.total


def test_the_device_page_before_any_finding_and_with_too_few(client, auth, web_store, model_sha):
    auth.login("clinician")
    assert "No clinician's findings yet" in client.get("/device").get_data(as_text=True)
    _add(web_store, 3, "normal", "normal", model_sha)
    page = client.get("/device").get_data(as_text=True)
    assert "too few to judge" in page and 'id="calibration-due"' not in page


def test_field_results_arithmetic():
    results = field_results({("abnormal", "abnormal"): 8, ("normal", "abnormal"): 2, ("normal", "normal"): 40,
                             ("abnormal", "normal"): 10}, expected_specificity=0.85, min_calibration=20)
    assert results.sensitivity.value == 0.8 and results.specificity.value == 0.8
    assert results.referrals_confirmed.value == pytest.approx(8 / 18)
    assert results.specificity.interval[0] < 0.8 < results.specificity.interval[1]
    assert not results.calibration_due  # 0.80 with 50 people: the interval still reaches 0.85
    assert results.sensitivity.enough and MIN_CASES == 10
    low = field_results({("normal", "normal"): 10, ("abnormal", "normal"): 30}, expected_specificity=0.85,
                        min_calibration=20)
    assert low.calibration_due
    few = field_results({("normal", "normal"): 1, ("abnormal", "normal"): 15}, expected_specificity=0.85,
                        min_calibration=20)
    assert not few.calibration_due  # 16 healthy recordings: too few to calibrate from
    assert not field_results({}, expected_specificity=None, min_calibration=20).any


def test_the_store_refuses_an_unknown_finding(store):
    rec_id = store.add_recording(file="a.wav", sha256="0" * 64, duration_s=20.0, rate=2000, source="device",
                                 device_id="box")
    with pytest.raises(ValueError):
        store.set_finding(rec_id, "maybe", actor="t")
    with pytest.raises(KeyError):
        store.set_finding(999, "normal", actor="t")
    assert store.get_recording(rec_id).finding is None


def test_field_results_count_people_screened_not_recordings(store):
    """A person recorded at four places, or again after a poor signal, is one person examined; the
    verdict acted on is abnormal if any recording said so; the same person on another day is a new
    screening, and every unassigned recording stands for its own person."""
    def record(verdict, patient_id=None, day="2026-03-02", finding=None):
        rec_id = store.add_recording(file=f"{verdict}-{patient_id}-{day}-{record.n}.wav", sha256="0" * 64,
                                     duration_s=20.0, rate=48000, source="device", device_id="box", verdict=verdict,
                                     patient_id=patient_id, captured_at=f"{day}T09:{record.n:02d}:00+00:00")
        record.n += 1
        if finding:
            store.set_finding(rec_id, finding, actor="user:2:doc@clinic.test")
        return rec_id
    record.n = 0
    amina, kofi = (store.add_patient(name=name, actor="t") for name in ("Amina", "Kofi"))
    # Amina, four places on one day: one abnormal; the finding entered on a normal-sounding place
    for verdict in ("poor_signal", "normal", "abnormal", "normal"):
        last = record(verdict, amina)
    store.set_finding(last, "abnormal", actor="user:2:doc@clinic.test")
    # Kofi: poor signal then normal, both examined; the later entry (normal) stands
    record("poor_signal", kofi, finding="abnormal")
    record("normal", kofi, finding="normal")
    # Kofi again a year later, only poor signals
    record("poor_signal", kofi, day="2027-03-02", finding="normal")
    record("normal", kofi, day="2027-03-03")  # another day, no finding: not counted
    # two unassigned recordings: two people
    record("abnormal", finding="normal")
    record("abnormal", finding="normal")
    assert store.findings_by_verdict() == {("abnormal", "abnormal"): 1, ("normal", "normal"): 1,
                                           ("poor_signal", "normal"): 1, ("abnormal", "normal"): 2}
    # every screening, examined or not: Kofi's second year is two (poor signal, then a normal another day)
    assert store.screenings_by_verdict() == {"abnormal": 3, "normal": 2, "poor_signal": 1}
    assert store.screenings_by_verdict(since="2027-01-01") == {"normal": 1, "poor_signal": 1}
    results = field_results(store.findings_by_verdict(), expected_specificity=None, min_calibration=20)
    assert results.examined == 5 and results.poor_signal == 1
