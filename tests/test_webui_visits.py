"""One person's visit on the web page: the places recorded together, assigned to a patient once,
exported, and the guide that tells the health worker how the box walks the protocol."""

from __future__ import annotations

import csv
import html
import io
import json

import pytest

FOUR = ["aortic", "pulmonic", "tricuspid", "mitral"]


@pytest.fixture
def heartpi_config(tmp_path):
    """This clinic's protocol listens at the four classic places, in order."""
    from device.config import config_from_mapping

    return config_from_mapping({"device": {"id": "test-box"}, "audio": {"sites": FOUR, "visit_gap_minutes": 15},
                                "storage": {"data_dir": str(tmp_path / "data")}}, env={})


@pytest.fixture
def visit(web_store):
    """One person at four places (a poor signal recorded again at the second), and someone else."""
    ids = []
    for n, (site, verdict) in enumerate([("aortic", "normal"), ("pulmonic", "poor_signal"), ("pulmonic", "abnormal"),
                                         ("tricuspid", "normal"), ("mitral", "normal")]):
        ids.append(web_store.add_recording(file=f"v1-{n}.wav", sha256="0" * 64, duration_s=20.0, rate=48000,
                                           source="device", device_id="test-box", verdict=verdict, site=site,
                                           visit="a1b2c3d4e5f6", captured_at=f"2026-03-02T09:0{n}:00+00:00"))
    ids.append(web_store.add_recording(file="v2.wav", sha256="0" * 64, duration_s=20.0, rate=48000, source="device",
                                       device_id="test-box", verdict="normal", site="aortic", visit="ffffff000000",
                                       captured_at="2026-03-02T09:30:00+00:00"))
    return ids


def text(response) -> str:
    return " ".join(html.unescape(response.get_data(as_text=True)).split())


def test_a_recording_page_shows_the_persons_other_places(client, auth, visit):
    auth.login("health_worker")
    page = text(client.get(f"/recordings/{visit[2]}"))
    table = page.split('id="visit"', 1)[1].split("</section>", 1)[0]
    assert "This person's visit: 5 recordings" in table
    rows = table.split("<tr")[2:]
    assert [r.split('class="site">', 1)[1].split("<", 1)[0] for r in rows] == [
        "aortic area", "pulmonic area", "pulmonic area", "tricuspid area", "mitral area (apex)"]
    assert 'class="current"' in rows[2] and "this recording" in rows[2]
    assert all(f'/recordings/{i}"' in table for i in visit[:5] if i != visit[2])
    assert f'/recordings/{visit[5]}"' not in table  # the next person is not in it
    assert "and the visit's 4 other recordings without a patient" in page
    print_result = page.split('id="referral-result">', 1)[1].split("</dd>", 1)[0]
    assert "at the pulmonic area (1 of 5 recordings of this visit" in print_result
    lone = text(client.get(f"/recordings/{visit[5]}"))
    assert 'id="visit"' not in lone and 'id="whole-visit"' not in lone


def test_assigning_from_the_recording_page_takes_the_whole_visit_when_asked(client, auth, web_store, visit):
    auth.login("health_worker")
    amina = web_store.add_patient(name="Amina", actor="t")
    token = auth.csrf(f"/recordings/{visit[0]}")
    response = client.post(f"/recordings/{visit[0]}/assign",
                           data={"csrf_token": token, "patient_id": str(amina), "whole_visit": "1"})
    assert response.status_code == 303
    assert "Recording assigned, with 4 more of the same visit." in text(client.get(response.headers["Location"]))
    assert [web_store.get_recording(i).patient_id for i in visit] == [amina] * 5 + [None]
    # unticked: one recording only, e.g. a place that was someone else's
    response = client.post(f"/recordings/{visit[4]}/assign", data={"csrf_token": token, "patient_id": ""})
    assert [web_store.get_recording(i).patient_id for i in visit] == [amina] * 4 + [None, None]
    assert "and the visit's 3 other recordings of this person" in text(client.get(f"/recordings/{visit[0]}"))


def test_the_patient_page_assigns_an_unassigned_visit_in_one_step(client, auth, web_store, visit):
    auth.login("health_worker")
    amina = web_store.add_patient(name="Amina", actor="t")
    page = text(client.get(f"/patients/{amina}"))
    rows = page.split('id="unassigned"', 1)[1].split("</table>", 1)[0].split("<tr>")[2:]
    assert len(rows) == 6
    assert sum("Assign to Amina with its visit (4 more)" in r for r in rows) == 5
    assert "mitral area (apex)" in rows[1]  # newest first: the next person, then the last place
    token = auth.csrf(f"/patients/{amina}")
    form = rows[3].split('action="', 1)[1].split('"', 1)[0]
    response = client.post(form, data={"csrf_token": token, "patient_id": str(amina), "back": "patient",
                                       "whole_visit": "1"})
    assert response.headers["Location"].endswith(f"/patients/{amina}")
    assert web_store.count_recordings(patient_id=amina) == 5
    page = text(client.get(f"/patients/{amina}"))
    assert "with 4 more of the same visit" in page
    assert page.split('id="unassigned"', 1)[1].split("</table>", 1)[0].count("<tr>") == 2  # header + next person


def test_the_csv_carries_the_visit(client, auth, visit):
    auth.login("clinician")
    rows = list(csv.DictReader(io.StringIO(client.get("/export/records.csv").get_data(as_text=True))))
    by_id = {int(r["recording_id"]): r["visit"] for r in rows}
    assert {by_id[i] for i in visit[:5]} == {"a1b2c3d4e5f6"} and by_id[visit[5]] == "ffffff000000"


def test_fhir_puts_a_visits_recordings_in_one_encounter(client, auth, web_store, visit):
    auth.login("clinician")
    amina = web_store.add_patient(name="Amina", actor="t")
    web_store.assign_recording(visit[5], amina, actor="t")  # the next person, assigned
    bundle = json.loads(client.get("/export/fhir.json?audio=0").get_data(as_text=True))
    resources = [e["resource"] for e in bundle["entry"]]
    encounters = {r["id"]: r for r in resources if r["resourceType"] == "Encounter"}
    assert set(encounters) == {"visit-a1b2c3d4e5f6", "visit-ffffff000000"}
    first = encounters["visit-a1b2c3d4e5f6"]
    assert first["period"] == {"start": "2026-03-02T09:00:00+00:00", "end": "2026-03-02T09:04:00+00:00"}
    assert first["identifier"][0]["value"] == "a1b2c3d4e5f6" and "subject" not in first  # nobody assigned yet
    assert encounters["visit-ffffff000000"]["subject"] == {"reference": f"Patient/patient-{amina}"}
    named = [r["id"] for r in resources if r.get("encounter") == {"reference": "Encounter/visit-a1b2c3d4e5f6"}]
    assert sorted(named) == sorted([f"media-{i}" for i in visit[:5]] + [f"observation-{i}" for i in visit[:5]])
    ids = [r["id"] for r in resources]
    assert ids.index("visit-a1b2c3d4e5f6") < min(ids.index(n) for n in named)  # declared before use


def test_the_guide_lists_the_places_in_order_with_their_flashes(client, auth):
    auth.login("health_worker")
    page = text(client.get("/guide"))
    places = page.split('id="guide-places">', 1)[1].split("</ol>", 1)[0]
    assert [p.split("</strong>", 1)[0] for p in places.split("<li><strong>")[1:]] == [
        "1 flash: aortic area", "2 flashes: pulmonic area", "3 flashes: tricuspid area", "4 flashes: mitral area (apex)"]
    assert "if <strong>any</strong> of the 4 places showed it" in page.split('id="after"', 1)[1]
    assert "red if any place said refer" in page.split('id="guide-last-place">', 1)[1].split("</span>", 1)[0]
    hold = page.split('id="guide-hold">', 1)[1].split("</p>", 1)[0]
    assert "start the <strong>next person</strong> at place 1" in hold and "After 15 minutes" in hold


def test_an_upload_names_no_place_when_the_protocol_has_several(client, auth):
    auth.login("health_worker")
    select = client.get("/upload").get_data(as_text=True).split('id="upload-site"', 1)[1].split("</select>", 1)[0]
    assert all("selected" not in option.split(">", 1)[0] for option in select.split("<option")[2:])


# -- a real browser --------------------------------------------------------------------------------
from tests.test_browser import ARTIFACTS, _login, live_server, page  # noqa: E402,F401 (fixtures, on this module's config)


@pytest.mark.browser
def test_staff_assign_a_visit_once_and_print_all_its_places_in_a_real_browser(live_server, page, heartpi_config):
    from device.storage import store_recording
    from tests.conftest import reference_wavs

    base, store = live_server
    ids = []
    for n, (site, verdict) in enumerate(zip(FOUR, ("normal", "abnormal", "normal", "normal"))):
        relative, sha = store_recording(heartpi_config.recordings_dir, reference_wavs()[n].read_bytes())
        ids.append(store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                                       device_id="test-box", verdict=verdict, site=site, visit="0badc0ffee00",
                                       captured_at=f"2026-03-02T09:0{n}:00+00:00"))
    pid = store.add_patient(name="Kwame Mensah", external_id="KM-3", actor="test")
    _login(page, base)
    page.goto(f"{base}/recordings/{ids[0]}")
    assert page.locator("#visit tbody tr").count() == 4
    assert page.locator("#whole-visit").is_checked()
    page.select_option("#assign-patient", str(pid))
    page.click("button:text-is('Assign')")
    page.wait_for_selector("text=Recording assigned, with 3 more of the same visit.")
    assert [store.get_recording(i).patient_id for i in ids] == [pid] * 4
    page.emulate_media(media="print")  # the referral sheet: the person's result, every place
    assert "referral" in page.inner_text("#referral h2")  # the aortic place was normal, the pulmonic not
    assert "abnormal: refer at the pulmonic area (1 of 4 recordings" in page.inner_text("#referral-result")
    assert page.locator("p.flash").is_hidden()
    assert page.locator("#visit").is_visible() and page.locator("#visit td.no-print >> nth=0").is_hidden()
    assert "pulmonic area" in page.inner_text("#visit")
    page.screenshot(path=str(ARTIFACTS / "12-visit-print.png"), full_page=True)
    assert not page.console_errors, page.console_errors


def test_the_recordings_list_shows_each_place(client, auth, visit):
    auth.login("health_worker")
    page = text(client.get("/recordings"))
    table = page.split('id="recordings"', 1)[1].split("</table>", 1)[0]
    assert "<th>Place</th>" in table
    assert [cell.split("<", 1)[0] for cell in table.split('class="site">')[1:]] == [
        "aortic area", "mitral area (apex)", "tricuspid area", "pulmonic area", "pulmonic area", "aortic area"]


def test_a_visit_without_places_is_a_recording_and_its_repeat(client, auth, web_store):
    """No protocol: a poor signal and the recording made again are one person, with no place to name."""
    ids = [web_store.add_recording(file=f"n-{n}.wav", sha256="0" * 64, duration_s=20.0, rate=48000, source="device",
                                   device_id="test-box", verdict=verdict, visit="0123456789ab")
           for n, verdict in enumerate(("poor_signal", "abnormal"))]
    auth.login("health_worker")
    page = text(client.get(f"/recordings/{ids[0]}"))
    assert "This person's visit: 2 recordings" in page
    result = page.split('id="referral-result">', 1)[1].split("</dd>", 1)[0]
    assert "abnormal: refer" in result and " at the" not in result and "(1 of 2 recordings" in result
    assert "Heart-sound screening: referral" in page


def test_a_person_the_box_could_not_judge_prints_as_a_referral(client, auth, web_store):
    """Three poor signals in a row ended the person (device.visits): the print-out for the referral
    says the box asked for one, where a visit of poor signals alone says "no result"."""
    from device.records import UNJUDGED_NOTE

    def person(visit: str, notes: tuple[str, ...]) -> list[int]:
        return [web_store.add_recording(file=f"{visit}-{n}.wav", sha256="0" * 64, duration_s=20.0, rate=48000,
                                        source="device", device_id="test-box", verdict="poor_signal", site="pulmonic",
                                        visit=visit, note=note) for n, note in enumerate(notes)]

    unjudged = person("0000000000aa", ("", "", UNJUDGED_NOTE))
    gave_up = person("0000000000bb", ("", ""))
    auth.login("health_worker")
    page = text(client.get(f"/recordings/{unjudged[0]}"))
    assert "Heart-sound screening: referral: the box could not judge this person" in page
    result = page.split('id="referral-result">', 1)[1].split("</dd>", 1)[0]
    assert "poor signal again and again at one place, so the box asked for a referral" in result
    assert UNJUDGED_NOTE in text(client.get(f"/recordings/{unjudged[2]}"))
    other = text(client.get(f"/recordings/{gave_up[1]}"))
    assert "Heart-sound screening: no result" in other and "asked for a referral" not in other
    listed = client.get("/recordings").get_data(as_text=True)  # lists mark the referral, not the other poor signals
    (row,) = [r for r in listed.split("<tr>") if "could not judge: refer" in r]
    assert f'href="/recordings/{unjudged[2]}"' in row
    auth.logout()
    auth.login("clinician")  # the exports carry the note, so the referral is not lost on the way out
    rows = {int(r["recording_id"]): r for r in csv.DictReader(io.StringIO(client.get("/export/records.csv")
                                                                          .get_data(as_text=True)))}
    assert [rows[i]["note"] for i in unjudged] == ["", "", UNJUDGED_NOTE]
    bundle = json.loads(client.get("/export/fhir.json").data)
    notes = {e["resource"]["id"]: e["resource"]["note"][0]["text"] for e in bundle["entry"]
             if e["resource"]["id"].startswith("observation-")}
    assert notes[f"observation-{unjudged[2]}"].endswith(f"Note: {UNJUDGED_NOTE}.")
    # "only referrals": the abnormal recordings and the poor signal that ended this person, in both
    # formats, and the audit log says which list left the device
    abnormal = web_store.add_recording(file="abnormal.wav", sha256="0" * 64, duration_s=20.0, rate=48000,
                                       source="device", device_id="test-box", verdict="abnormal")
    web_store.add_recording(file="normal.wav", sha256="0" * 64, duration_s=20.0, rate=48000, source="device",
                            device_id="test-box", verdict="normal")
    referred = [int(r["recording_id"]) for r in csv.DictReader(io.StringIO(
        client.get("/export/records.csv?referrals=1").get_data(as_text=True)))]
    assert referred == [abnormal, unjudged[2]]
    bundle = json.loads(client.get("/export/fhir.json?referrals=1&audio=0").data)
    assert sorted(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["id"].startswith("observation-")) \
        == sorted([f"observation-{abnormal}", f"observation-{unjudged[2]}"])
    exported = [(e["action"], e["detail"]) for e in web_store.audit_entries(action="export.")]
    assert exported[:2] == [("export.fhir", "range:-..- referrals only"), ("export.csv", "range:-..- referrals only")]
    assert ("export.csv", "range:-..-") in exported
    form = text(client.get("/export"))
    assert 'name="referrals" value="1"' in form and "only referrals" in form
