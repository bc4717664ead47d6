"""A clinic's lists after a year: pages with totals, and choosing one patient among thousands."""

from __future__ import annotations

import re

import pytest

from tests.crowd import bulk_patients, bulk_recordings


def _rows(html: str, table_id: str) -> list[str]:
    body = html.split(f'id="{table_id}"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


def _option_names(html: str, select_id: str) -> list[str]:
    select = html.split(f'id="{select_id}"', 1)[1].split("</select>", 1)[0]
    return [re.sub(r"\s+", " ", name).strip() for name in re.findall(r"<option[^>]*>([^<]*)</option>", select)]


def _selected(html: str, select_id: str) -> list[str]:
    select = html.split(f'id="{select_id}"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="(\d*)" selected', select)


# -- the store -------------------------------------------------------------------------------
def test_counts_agree_with_the_lists_they_page(store):
    pid = store.add_patient(name="Amina", actor="t")
    bulk_recordings(store, 7, verdict="abnormal", patient_id=pid)
    bulk_recordings(store, 5, verdict="normal", day="2026-04")
    for filters in ({}, {"verdict": "abnormal"}, {"unassigned": True}, {"patient_id": pid},
                    {"since": "2026-04-01"}, {"until": "2026-04-01"}, {"device_id": "other"}):
        assert store.count_recordings(**filters) == len(store.list_recordings(limit=1000, **filters)), filters
    pages = [r.id for offset in (0, 5, 10) for r in store.list_recordings(limit=5, offset=offset)]
    assert sorted(pages) == sorted(r.id for r in store.list_recordings(limit=1000))  # no row twice or lost


def test_patient_search_is_literal_and_recent_first_follows_recordings(store):
    old, percent, under = bulk_patients(store, ["Old friend", "Ama 100%", "Kofi_A"])
    assert [p["id"] for p in store.list_patients("100%")] == [percent]
    assert store.count_patients("%") == 1 and store.count_patients("_") == 1
    assert store.count_patients("N-0000") == 3  # patient numbers are searched too
    bulk_recordings(store, 1, patient_id=old, day="2026-05")  # seen again today
    assert [p["id"] for p in store.list_patients(recent_first=True)][0] == old
    assert store.patient_names([old, under, 999999, None]) == {old: "Old friend", under: "Kofi_A"}


def test_patient_names_for_more_ids_than_sqlite_binds_at_once(store):
    ids = bulk_patients(store, [f"P{i}" for i in range(1200)])
    assert len(store.patient_names(ids)) == 1200


# -- pages -----------------------------------------------------------------------------------
def test_recordings_come_in_pages_with_their_total_and_keep_the_filter(client, auth, web_store):
    bulk_recordings(web_store, 230, verdict="abnormal")
    bulk_recordings(web_store, 20, verdict="normal", day="2026-06")
    auth.login("health_worker")
    first = client.get("/recordings?verdict=abnormal").get_data(as_text=True)
    assert len(_rows(first, "recordings")) == 100
    assert "Recordings 1–100 of 230" in first and "Newer" not in first
    older = re.search(r'<a rel="next" class="pager-forward" href="([^"]+)"', first).group(1)
    assert "verdict=abnormal" in older and "page=2" in older
    last = client.get("/recordings?verdict=abnormal&page=3").get_data(as_text=True)
    assert len(_rows(last, "recordings")) == 30 and "Recordings 201–230 of 230" in last
    assert 'rel="next"' not in last and 'rel="prev"' in last
    seen = set()
    for page in (1, 2, 3):
        html = client.get(f"/recordings?verdict=abnormal&page={page}").get_data(as_text=True)
        seen.update(re.findall(r'href="/recordings/(\d+)"', html))
    assert len(seen) == 230  # every recording reachable, none twice
    assert "Recordings 201–230 of 230" in client.get("/recordings?verdict=abnormal&page=99").get_data(as_text=True)
    assert "Recordings 1–100 of 250" in client.get("/recordings?page=x").get_data(as_text=True)


def test_an_empty_list_says_so(client, auth):
    auth.login("health_worker")
    html = client.get("/recordings").get_data(as_text=True)
    assert "No recordings" in html and 'rel="next"' not in html


def test_patients_come_in_pages_and_the_list_names_the_patient(client, auth, web_store):
    ids = bulk_patients(web_store, [f"Patient {i:03d}" for i in range(205)])
    bulk_recordings(web_store, 1, patient_id=ids[7])
    auth.login("clinician")
    html = client.get("/patients").get_data(as_text=True)
    assert len(_rows(html, "patients")) == 100 and "Patients 1–100 of 205" in html
    html = client.get("/patients?page=3").get_data(as_text=True)
    assert _rows(html, "patients")[-1].count("Patient 204") == 1
    html = client.get("/patients?q=Patient+19").get_data(as_text=True)
    assert "Patients 1–10 of 10" in html  # 190-199
    recordings = client.get("/recordings").get_data(as_text=True)
    assert f'<a href="/patients/{ids[7]}">Patient 007</a>' in recordings


# -- choosing a patient ----------------------------------------------------------------------
@pytest.fixture
def crowded(web_store):
    """600 patients; the alphabetically last one was registered long ago and seen rarely."""
    zainab = bulk_patients(web_store, ["Zainab Yusuf"], updated_at="2025-01-01T00:00:00+00:00")[0]
    others = bulk_patients(web_store, [f"Abebe {i:03d}" for i in range(599)], numbers="A")
    rec_id = bulk_recordings(web_store, 1)[0]
    return {"zainab": zainab, "others": others, "rec_id": rec_id}


def test_a_patient_late_in_the_alphabet_can_be_found_and_assigned(client, auth, web_store, crowded):
    auth.login("health_worker")
    rec_id, zainab = crowded["rec_id"], crowded["zainab"]
    page = client.get(f"/recordings/{rec_id}").get_data(as_text=True)
    assert "Zainab Yusuf" not in _option_names(page, "assign-patient")
    assert len(_option_names(page, "assign-patient")) == 1 + 50
    assert "The 50 most recently seen of 600 patients are listed" in page
    found = client.get(f"/recordings/{rec_id}?find=zainab").get_data(as_text=True)
    assert _option_names(found, "assign-patient") == ["— none —", "Zainab Yusuf (N-00000)"]
    assert _selected(found, "assign-patient") == [str(zainab)]  # the one match is chosen for the user
    assert "1 patient matches “zainab”" in found
    response = client.post(f"/recordings/{rec_id}/assign",
                           data={"csrf_token": auth.csrf(f"/recordings/{rec_id}"), "patient_id": str(zainab)})
    assert response.status_code == 303
    assert web_store.get_recording(rec_id).patient_id == zainab
    # Later, without a search, the assigned patient is still offered, and selected.
    again = client.get(f"/recordings/{rec_id}").get_data(as_text=True)
    assert _selected(again, "assign-patient") == [str(zainab)]


def test_a_search_matching_many_says_to_type_more(client, auth, crowded):
    auth.login("health_worker")
    html = client.get(f"/recordings/{crowded['rec_id']}?find=abebe").get_data(as_text=True)
    assert "599 patients match “abebe”; the first 50 are listed" in html
    assert _selected(html, "assign-patient") == []
    html = client.get(f"/recordings/{crowded['rec_id']}?find=nobody").get_data(as_text=True)
    assert "No patient matches “nobody”" in html


def test_unassigned_recordings_are_assigned_from_the_patients_page(client, auth, web_store, crowded):
    auth.login("health_worker")
    zainab, rec_id = crowded["zainab"], crowded["rec_id"]
    page = client.get(f"/patients/{zainab}").get_data(as_text=True)
    assert "Assign to Zainab Yusuf" in page
    response = client.post(f"/recordings/{rec_id}/assign",
                           data={"csrf_token": auth.csrf(f"/patients/{zainab}"), "patient_id": str(zainab),
                                 "back": "patient"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/patients/{zainab}")
    assert web_store.get_recording(rec_id).patient_id == zainab
    assert web_store.audit_entries(limit=1, action="recording.assign")[0]["detail"] == f"patient:{zainab}"
    after = client.get(f"/patients/{zainab}").get_data(as_text=True)
    assert "Assign to" not in after and f'href="/recordings/{rec_id}"' in after


def test_upload_from_a_patients_page_preselects_them_and_the_form_wins(client, auth, web_store, crowded):
    from tests.conftest import reference_wavs

    auth.login("health_worker")
    zainab, other = crowded["zainab"], crowded["others"][0]
    page = client.get(f"/patients/{zainab}").get_data(as_text=True)
    assert f'href="/upload?patient_id={zainab}"' in page
    form = client.get(f"/upload?patient_id={zainab}").get_data(as_text=True)
    assert _selected(form, "upload-patient") == [str(zainab)]
    assert 'action="/upload"' in form  # the POST does not carry the preselection in its URL
    import io
    response = client.post(f"/upload?patient_id={zainab}", content_type="multipart/form-data", data={
        "csrf_token": auth.csrf("/upload"), "patient_id": str(other),
        "file": (io.BytesIO(reference_wavs()[0].read_bytes()), "heart.wav")})
    assert response.status_code == 303
    assert web_store.list_recordings(limit=1)[0].patient_id == other


def test_the_export_page_finds_a_patient_too(client, auth, crowded):
    auth.login("clinician")
    html = client.get("/export?find=Zainab").get_data(as_text=True)
    assert _option_names(html, "export-patient") == ["all patients", "Zainab Yusuf (N-00000)"]
    assert _selected(html, "export-patient") == [str(crowded["zainab"])]


def _add(store, verdict, note="", reasons=()):
    return store.add_recording(file=f"{verdict}-{len(note)}-{len(reasons)}.wav", sha256="0" * 64, duration_s=20.0,
                               rate=2000, source="device", device_id="box", verdict=verdict,
                               quality_reasons=reasons, note=note, captured_at="2026-03-01T08:00:00+00:00")


def test_every_referral_is_listed_together_the_box_s_could_not_judge_among_them(client, auth, web_store):
    """Staff looking for whom to refer: the abnormal recordings and the poor signals that ended a
    person as "cannot judge: refer" (their verdict is poor signal; the referral is in the note),
    not the other poor signals, not the normal ones, whatever else their notes say."""
    from device.records import UNJUDGED_NOTE

    abnormal = _add(web_store, "abnormal", note="stopped early with the button")
    unjudged = _add(web_store, "poor_signal", note=f"power sagged; {UNJUDGED_NOTE}", reasons=("no_heartbeat",))
    _add(web_store, "poor_signal", note="poor signal 2 times in a row", reasons=("no_heartbeat",))
    _add(web_store, "normal", note="the box could not judge")  # near the words, not the note
    _add(web_store, "poor_signal")
    filters = {"referrals": True}
    assert [r.id for r in web_store.list_recordings(**filters)] == [unjudged, abnormal]
    assert web_store.count_recordings(**filters) == 2
    assert web_store.count_recordings(referrals=True, unassigned=True, device_id="other") == 0

    auth.login("health_worker")
    html = client.get("/recordings?verdict=refer").get_data(as_text=True)
    listed = {int(i) for i in re.findall(r'href="/recordings/(\d+)"', html)}
    assert listed == {abnormal, unjudged}
    assert "Recordings 1–2 of 2" in html
    assert '<option value="refer" selected>refer: abnormal or could not judge</option>' in html
    rows = _rows(html, "recordings")
    assert sum("could not judge: refer" in row for row in rows) == 1
    # the plain verdict filters are unchanged: poor signal still lists all three
    assert "Recordings 1–3 of 3" in client.get("/recordings?verdict=poor_signal").get_data(as_text=True)
