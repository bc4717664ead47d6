"""Where on the chest a recording was made: set by the device's protocol, chosen on upload,
corrected on the recording's page by whoever recorded it, exported, named in the guide."""

from __future__ import annotations

import csv
import html
import io
import json

import pytest

from tests.conftest import reference_wavs


@pytest.fixture
def heartpi_config(tmp_path):
    """This clinic's protocol listens at the aortic area."""
    from device.config import config_from_mapping

    return config_from_mapping({"device": {"id": "test-box"}, "audio": {"site": "aortic"},
                                "storage": {"data_dir": str(tmp_path / "data")}}, env={})


def _upload(client, auth, **fields):
    token = auth.csrf("/upload")
    return client.post("/upload", data={"csrf_token": token, "patient_id": "",
                                        "file": (io.BytesIO(reference_wavs()[0].read_bytes()), "heart.wav"),
                                        **fields}, content_type="multipart/form-data")


def _selected(page: str, select_id: str) -> str:
    select = page.split(f'id="{select_id}"', 1)[1].split("</select>", 1)[0]
    chosen = [part.split('"', 1)[0] for part in select.split('<option value="')[1:] if "selected" in part.split(">", 1)[0]]
    return chosen[0] if chosen else ""


def test_an_upload_starts_at_the_protocols_place_and_keeps_the_choice(client, auth, web_store):
    auth.login("health_worker")
    assert _selected(client.get("/upload").get_data(as_text=True), "upload-site") == "aortic"
    response = _upload(client, auth, site="pulmonic")
    assert response.status_code == 303
    rec = web_store.list_recordings()[0]
    assert rec.site == "pulmonic"
    page = html.unescape(client.get(response.headers["Location"]).get_data(as_text=True))
    assert "pulmonic area: left side of the breastbone" in page.split('id="site-text"', 1)[1].split("</dd>", 1)[0]
    assert _selected(page, "site-choice") == "pulmonic"
    assert _upload(client, auth, site="").status_code == 303
    assert web_store.list_recordings()[0].site is None
    assert _upload(client, auth, site="apex").status_code == 400
    assert web_store.count_recordings() == 2  # the refused upload stored nothing


def test_a_health_worker_corrects_the_place_and_it_is_audited(client, auth, web_store):
    rec_id = web_store.add_recording(file="a.wav", sha256="0" * 64, duration_s=20.0, rate=48000, source="device",
                                     device_id="test-box", verdict="normal", site="aortic")
    auth.login("health_worker")
    token = auth.csrf(f"/recordings/{rec_id}")
    response = client.post(f"/recordings/{rec_id}/site", data={"csrf_token": token, "site": "mitral"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/recordings/{rec_id}#site")
    assert web_store.get_recording(rec_id).site == "mitral"
    page = html.unescape(client.get(f"/recordings/{rec_id}").get_data(as_text=True))
    assert "mitral area (apex): left chest, 5th space" in page
    client.post(f"/recordings/{rec_id}/site", data={"csrf_token": token, "site": ""})
    page = client.get(f"/recordings/{rec_id}").get_data(as_text=True)
    assert web_store.get_recording(rec_id).site is None and "not recorded" in page.split('id="site-text"', 1)[1][:40]
    trail = [(e["actor"].split(":")[-1], e["detail"]) for e in web_store.audit_entries(action="recording.site")]
    assert trail == [("health_worker@clinic.test", "mitral -> None"), ("health_worker@clinic.test", "aortic -> mitral")]
    assert client.post(f"/recordings/{rec_id}/site", data={"csrf_token": token, "site": "apex"}).status_code == 400
    assert client.post("/recordings/999999/site", data={"csrf_token": token, "site": "mitral"}).status_code == 404
    assert client.post(f"/recordings/{rec_id}/site", data={"site": "mitral"}).status_code == 400  # no CSRF token
    assert web_store.get_recording(rec_id).site is None


def test_a_patients_page_shows_where_each_recording_was_made(client, auth, web_store):
    pid = web_store.add_patient(name="Amina", actor="t")
    for site in ("mitral", None):
        rec_id = web_store.add_recording(file=f"{site}.wav", sha256="0" * 64, duration_s=20.0, rate=48000,
                                         source="device", device_id="test-box", verdict="normal", site=site)
        web_store.assign_recording(rec_id, pid, actor="t")
    auth.login("clinician")
    page = html.unescape(client.get(f"/patients/{pid}").get_data(as_text=True))
    cells = [cell.split("</td>", 1)[0] for cell in page.split('<td class="site">')[1:]]
    assert sorted(cells) == ["mitral area (apex)", "–"]


def test_the_place_travels_in_the_csv_and_fhir_exports(client, auth, web_store):
    placed = web_store.add_recording(file="a.wav", sha256="0" * 64, duration_s=20.0, rate=48000, source="device",
                                     device_id="test-box", verdict="abnormal", p_abnormal=0.9, site="tricuspid")
    unplaced = web_store.add_recording(file="b.wav", sha256="1" * 64, duration_s=20.0, rate=48000, source="device",
                                       device_id="test-box", verdict="normal", p_abnormal=0.1)
    auth.login("clinician")
    rows = {int(r["recording_id"]): r for r in csv.DictReader(io.StringIO(
        client.get("/export/records.csv").get_data(as_text=True)))}
    assert (rows[placed]["site"], rows[unplaced]["site"]) == ("tricuspid", "")
    bundle = json.loads(client.get("/export/fhir.json").get_data(as_text=True))
    observations = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]
                    if e["resource"]["resourceType"] == "Observation"}
    body_site = observations[f"observation-{placed}"]["bodySite"]
    assert body_site["coding"][0]["code"] == "tricuspid-area" and body_site["coding"][0]["display"] == "tricuspid area"
    assert body_site["text"].startswith("tricuspid area: left side of the lower breastbone")
    assert "bodySite" not in observations[f"observation-{unplaced}"]


def test_the_guide_names_the_protocols_place(client, auth):
    auth.login("health_worker")
    page = html.unescape(client.get("/guide").get_data(as_text=True))
    step = " ".join(page.split('id="guide-site"', 1)[1].split("</li>", 1)[0].split())
    assert "at the <strong>aortic area</strong>: right side of the breastbone, 2nd space between the ribs" in step
    assert "correct it on the recording's web page" in step
