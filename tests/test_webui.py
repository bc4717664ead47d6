"""Clinic web page through Flask's test client: routes, roles, security, upload, exports."""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import os
import re
import sqlite3
import time

import numpy as np
import pytest

from tests.conftest import PASSWORD, reference_wavs
from tests.signals import wav_from_parts

ROLES = ("admin", "clinician", "health_worker")


def _sample_url(rule) -> str:
    values = {arg: 1 for arg in rule.arguments}
    return rule.rule.replace("<int:rec_id>", "1").replace("<int:patient_id>", "1").replace(
        "<int:user_id>", "1").replace("<path:filename>", "style.css").replace("<mode>", "heart") if values else rule.rule


def _upload(client, auth, path=None, data=None, patient_id=""):
    token = auth.csrf("/upload")
    payload = data if data is not None else (path or reference_wavs()[0]).read_bytes()
    return client.post("/upload", data={"csrf_token": token, "patient_id": patient_id,
                                        "file": (io.BytesIO(payload), "heart.wav")},
                       content_type="multipart/form-data")


def _normal_whole_and_first_6_s():
    """A shipped normal recording (20 s) and the WAV bytes of its first 6 s: a normal from under
    10 s, which carries the short-recording caution, beside one that does not."""
    import dsp

    normal = [p for p in reference_wavs() if p.name.startswith("normal")][0]
    samples, rate = dsp.read_wav(normal)
    short = io.BytesIO()
    dsp.write_wav(short, samples[: 6 * rate], rate)
    return normal, short


# -- access control -------------------------------------------------------------------------
def test_every_page_needs_login(app, client):
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "auth.login", "auth.register") or "GET" not in rule.methods:
            continue
        response = client.get(_sample_url(rule))
        assert response.status_code == 302 and "/login" in response.headers["Location"], rule.rule
        checked += 1
    assert checked >= 15


def test_every_post_route_requires_a_csrf_token(app, client, auth):
    auth.login("admin")
    checked = 0
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods:
            continue
        response = client.post(_sample_url(rule), data={"email": "x", "password": "y"})
        assert response.status_code == 400, rule.rule
        assert b"CSRF" in response.data
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("role,url,status", [
    ("health_worker", "/export", 403), ("health_worker", "/export/records.csv", 403),
    ("health_worker", "/export/fhir.json", 403), ("health_worker", "/export/fhir-transaction.json", 403),
    ("health_worker", "/admin/users", 403),
    ("health_worker", "/patients/1/edit", 403), ("clinician", "/admin/users", 403),
    ("clinician", "/export/backup.sqlite3", 403), ("clinician", "/export", 200),
    ("health_worker", "/recordings", 200), ("health_worker", "/patients", 200),
    ("health_worker", "/upload", 200), ("health_worker", "/device", 200),
    ("admin", "/admin/users", 200), ("admin", "/export/backup.sqlite3", 200),
    ("clinician", "/export/backup.tar", 403), ("admin", "/export/backup.tar", 200),
])
def test_roles(client, auth, web_store, role, url, status):
    web_store.add_patient(name="P", actor="t")
    auth.login(role)
    assert client.get(url).status_code == status


# -- login, sessions -------------------------------------------------------------------------------
def test_login_and_logout_invalidates_the_session_server_side(client, auth, app):
    response = auth.login("clinician")
    assert response.status_code == 302
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie.secure and cookie.http_only and cookie.same_site == "Lax"
    assert client.get("/recordings").status_code == 200
    stolen = cookie.value
    auth.logout()
    client.set_cookie(app.config["SESSION_COOKIE_NAME"], stolen, secure=True, httponly=True)
    response = client.get("/recordings")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_unknown_email_and_wrong_password_look_and_cost_the_same(client, auth):
    auth.ensure_user("clinician", "real@clinic.test")
    timings = {}
    bodies = {}
    for label, email in (("unknown", "nobody@clinic.test"), ("wrong", "real@clinic.test")):
        samples = []
        for _ in range(3):
            token = auth.csrf()
            start = time.perf_counter()
            response = client.post("/login", data={"email": email, "password": "not the password",
                                                   "csrf_token": token})
            samples.append(time.perf_counter() - start)
            assert response.status_code == 401
        timings[label] = min(samples)
        bodies[label] = re.sub(r'value="[^"]*"', "", response.get_data(as_text=True))
    assert bodies["unknown"].replace("nobody@clinic.test", "X") == bodies["wrong"].replace("real@clinic.test", "X")
    ratio = timings["unknown"] / timings["wrong"]
    assert 0.5 < ratio < 2.0, timings


def test_account_locks_after_five_failures(client, auth, web_store):
    user = auth.ensure_user("clinician", "lock@clinic.test")
    for _ in range(5):
        client.post("/login", data={"email": user["email"], "password": "wrong password!",
                                    "csrf_token": auth.csrf()})
    response = client.post("/login", data={"email": user["email"], "password": PASSWORD,
                                           "csrf_token": auth.csrf()})
    assert response.status_code == 401 and b"Wrong email or password" in response.data
    assert web_store.user_by_email(user["email"])["locked_until"]


def test_client_is_throttled_after_many_failures(client, auth, app):
    app.config["LOGIN_FAILURES_PER_CLIENT"] = 3
    from webui import auth as auth_module

    auth_module._client_failures.clear()
    for n in range(3):
        client.post("/login", data={"email": f"u{n}@x.test", "password": "whatever1234", "csrf_token": auth.csrf()})
    response = client.post("/login", data={"email": "u@x.test", "password": "whatever1234", "csrf_token": auth.csrf()})
    assert response.status_code == 429 and b"Wait 15 minutes" in response.data
    auth_module._client_failures.clear()


def test_password_change_ends_other_sessions(app, auth, client):
    auth.login("clinician")
    other = app.test_client()
    AuthOther = type(auth)(other, app.extensions["heartpi_store"])
    AuthOther.login("clinician")
    assert other.get("/recordings").status_code == 200
    response = client.post("/password", data={"current": PASSWORD, "new": "a brand new password",
                                              "confirm": "a brand new password", "csrf_token": auth.csrf("/password")})
    assert response.status_code == 302
    assert client.get("/recordings").status_code == 200  # this session continues
    assert other.get("/recordings").status_code == 302  # the other one is gone


def test_self_registration_needs_admin_approval(client, auth, web_store):
    assert client.get("/register").status_code == 404
    web_store.set_setting("self_registration", "on", actor="t")
    response = client.post("/register", data={"email": "new@clinic.test", "password": "long enough pw",
                                              "csrf_token": auth.csrf("/register")})
    assert response.status_code == 302
    login = client.post("/login", data={"email": "new@clinic.test", "password": "long enough pw",
                                        "csrf_token": auth.csrf()})
    assert login.status_code == 401
    uid = web_store.user_by_email("new@clinic.test")["id"]
    auth.login("admin")
    client.post(f"/admin/users/{uid}", data={"action": "approve", "csrf_token": auth.csrf("/admin/users")})
    auth.logout()
    login = client.post("/login", data={"email": "new@clinic.test", "password": "long enough pw",
                                        "csrf_token": auth.csrf()})
    assert login.status_code == 302


def test_admin_creates_user_with_one_time_password_and_cannot_disable_last_admin(client, auth, web_store):
    auth.login("admin")
    response = client.post("/admin/users", data={"email": "nurse@clinic.test", "role": "health_worker",
                                                 "csrf_token": auth.csrf("/admin/users")})
    temp = re.search(rb"<code>([^<]+)</code>", response.data).group(1).decode()
    assert web_store.user_by_email("nurse@clinic.test")["role"] == "health_worker" and len(temp) >= 12
    admin_id = web_store.user_by_email("admin@clinic.test")["id"]
    client.post(f"/admin/users/{admin_id}", data={"action": "disable", "csrf_token": auth.csrf("/admin/users")})
    assert web_store.get_user(admin_id)["active"] == 1


def test_security_headers(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert b"<script>" not in response.data and b"style=" not in response.data


def test_tls_config_uses_host_prefixed_cookie(tmp_path):
    from device.config import config_from_mapping
    from webui import create_app

    config = config_from_mapping({"storage": {"data_dir": str(tmp_path)},
                                  "web": {"tls_cert": "/x.crt", "tls_key": "/x.key"}}, env={})
    app = create_app({"HEARTPI_CONFIG": config})
    assert app.config["SESSION_COOKIE_NAME"].startswith("__Host-")
    assert app.test_client().get("/login", base_url="https://localhost").headers["Strict-Transport-Security"]


# -- recordings, upload -------------------------------------------------------------------------------
def test_upload_shows_the_verdict_and_stores_the_file(client, auth, web_store, heartpi_config):
    auth.login("health_worker")
    path = [p for p in reference_wavs() if p.name.startswith("abnormal")][0]
    response = _upload(client, auth, path)
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "abnormal: refer" in page and "Screening aid, not a diagnosis" in page
    rec = web_store.list_recordings()[0]
    assert rec.source == "upload" and rec.uploaded_by is not None
    stored = (heartpi_config.recordings_dir / rec.file).read_bytes()
    assert stored == path.read_bytes() and hashlib.sha256(stored).hexdigest() == rec.sha256
    original = client.get(f"/recordings/{rec.id}/original.wav")
    assert original.status_code == 200 and original.data == stored
    audio = client.get(f"/recordings/{rec.id}/audio.wav")  # 2 kHz: resampled so browsers can play it
    assert audio.status_code == 200 and audio.mimetype == "audio/wav"
    import dsp

    played, rate = dsp.read_wav(audio.data)
    assert rate == 8000 and abs(played.size / rate - rec.duration_s) < 0.01
    svg = client.get(f"/recordings/{rec.id}/waveform.svg")
    assert svg.status_code == 200 and svg.data.startswith(b"<svg") and b"polygon" in svg.data
    png = client.get(f"/recordings/{rec.id}/spectrogram.png")
    assert png.status_code == 200 and png.data.startswith(b"\x89PNG")
    assert (heartpi_config.data_dir / "cache" / f"{rec.sha256}-spectrogram.png").exists()


def test_a_phones_m4a_upload_is_judged_and_kept_as_the_wav_that_was_analysed(client, auth, web_store,
                                                                              heartpi_config, classifier):
    pytest.importorskip("av")
    import dsp
    from tests.conftest import PHONE_FORMATS, phone_copy

    auth.login("health_worker")
    path = [p for p in reference_wavs() if p.name.startswith("abnormal")][0]
    rate = PHONE_FORMATS["m4a"][2]
    m4a = phone_copy(path, "m4a")
    response = _upload(client, auth, data=m4a)
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "abnormal: refer" in page and "M4A/MP4 (AAC), kept as WAV" in page
    rec = web_store.list_recordings()[0]
    stored = (heartpi_config.recordings_dir / rec.file).read_bytes()
    assert stored[:4] == b"RIFF" and hashlib.sha256(stored).hexdigest() == rec.sha256
    kept, kept_rate = dsp.read_wav(stored)
    decoded = dsp.read_audio(m4a)
    assert kept_rate == rate == rec.rate and np.max(np.abs(kept - decoded.samples)) <= 1 / 32768
    judged = classifier.classify(kept, kept_rate)  # the verdict is the stored WAV's, to the last digit
    assert (rec.verdict, rec.p_abnormal) == (judged.label, pytest.approx(judged.p_abnormal, abs=1e-9))
    assert rec.verdict == "abnormal"
    assert client.get(f"/recordings/{rec.id}/spectrogram.png").data.startswith(b"\x89PNG")


def test_an_upload_with_the_chest_piece_lifted_says_what_was_left_out(client, auth, web_store):
    import dsp

    auth.login("health_worker")
    samples, rate = dsp.read_wav([p for p in reference_wavs() if p.name.startswith("normal")][0])
    samples[8 * rate:10 * rate] = 0.0
    response = _upload(client, auth, data=dsp.wav_bytes(samples, rate))
    assert response.status_code == 303
    rec = web_store.list_recordings()[0]
    assert rec.verdict == "normal"
    assert rec.note.startswith("uploaded as heart.wav; ") and rec.note.endswith(
        " s with the stethoscope off the skin left out of the verdict")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "off the skin left out of the verdict" in page and 'id="left-out-hint"' in page
    svg = client.get(f"/recordings/{rec.id}/waveform.svg").get_data(as_text=True)
    (shade,) = [part for part in svg.split("<rect ")[1:] if part.startswith('class="left-out')]
    x, width = (float(shade.split(f'{name}="')[1].split('"')[0]) for name in ("x", "width"))
    assert 'class="left-out lifted"' in shade and "the stethoscope off the skin" in shade
    assert x <= 8.0 / 20.0 * 1000 and x + width >= 10.0 / 20.0 * 1000  # the 2 s set to zero at 8-10 s, shaded
    clean = _upload(client, auth, path=[p for p in reference_wavs() if p.name.startswith("normal-a")][0])
    clean_id = int(clean.headers["Location"].rsplit("/", 1)[1])
    assert 'id="left-out-hint"' not in client.get(clean.headers["Location"]).get_data(as_text=True)
    assert 'class="left-out' not in client.get(f"/recordings/{clean_id}/waveform.svg").get_data(as_text=True)


def test_a_voice_recorders_adpcm_wav_upload_is_judged_and_kept_as_pcm(client, auth, web_store, heartpi_config):
    """An IMA ADPCM WAV (voice recorders, dictation machines) was once refused as damaged."""
    pytest.importorskip("av")
    import dsp
    from tests.conftest import encode_compressed

    auth.login("health_worker")
    path = [p for p in reference_wavs() if p.name.startswith("normal")][0]
    samples, rate = dsp.read_wav(path)
    adpcm = encode_compressed(dsp.resample(samples, rate, 22050), 22050, "wav", "adpcm_ima_wav")
    response = _upload(client, auth, data=adpcm)
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "IMA ADPCM WAV, kept as WAV" in page
    rec = web_store.list_recordings()[0]
    stored = (heartpi_config.recordings_dir / rec.file).read_bytes()
    kept, kept_rate = dsp.read_wav(stored)  # plain PCM: every page, export and backup reads it
    assert (rec.verdict, kept_rate, rec.rate) == ("normal", 22050, 22050) and abs(kept.size / 22050 - 20.0) < 0.1


def test_a_short_clip_from_another_stethoscope_gets_a_verdict_and_pictures(client, auth, web_store):
    """Other devices export a few cycles (1-4 s): the upload is judged, not refused as too short."""
    import dsp
    from tests.signals import heart_sounds

    auth.login("health_worker")
    response = _upload(client, auth, data=dsp.wav_bytes(heart_sounds(75, 2.5, 8000, seed=3), 8000))
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'id="verdict"' in page and "poor signal" not in page and "too short" not in page
    rec = web_store.list_recordings()[0]
    assert rec.verdict in ("normal", "abnormal") and abs(rec.duration_s - 2.5) < 0.01
    assert client.get(f"/recordings/{rec.id}/waveform.svg").status_code == 200
    assert client.get(f"/recordings/{rec.id}/spectrogram.png").data.startswith(b"\x89PNG")


@pytest.mark.parametrize("data,message", [
    (b"this is not audio", "not a WAV recording"),
    (wav_from_parts(rate=8000, payload=b"\x00\x01" * 4000), "recording too short: 0.5 s"),
    (wav_from_parts(fmt=3, bits=32, rate=8000, payload=b"\x00\x00\xc0\x7f" * 48000), "NaN"),
])
def test_bad_upload_is_refused_with_the_dsp_message_and_stores_nothing(client, auth, web_store,
                                                                       heartpi_config, data, message):
    auth.login("clinician")
    response = _upload(client, auth, data=data)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert web_store.count_recordings() == 0
    assert not list(heartpi_config.recordings_dir.rglob("*")) if heartpi_config.recordings_dir.exists() else True


def test_too_large_upload_is_a_clear_413(client, auth, app):
    app.config["MAX_CONTENT_LENGTH"] = 10_000
    auth.login("clinician")
    response = _upload(client, auth)
    assert response.status_code == 413 and b"File too large" in response.data


def test_recordings_list_filters_and_missing_recording(client, auth, web_store):
    auth.login("clinician")
    _upload(client, auth, [p for p in reference_wavs() if p.name.startswith("normal")][0])
    assert b"verdict normal" in client.get("/recordings").data
    assert b"verdict normal" not in client.get("/recordings?verdict=abnormal").data
    assert client.get("/recordings/999").status_code == 404


def test_patients_create_search_edit_assign_and_audit(client, auth, web_store):
    auth.login("clinician")
    response = client.post("/patients/new", data={"name": "Amina Yusuf", "external_id": "KN-0042",
                                                  "birth_date": "2016-03-04", "sex": "female", "notes": "",
                                                  "csrf_token": auth.csrf("/patients/new")})
    assert response.status_code == 303
    pid = web_store.list_patients("Amina")[0]["id"]
    assert b"Amina Yusuf" in client.get("/patients?q=KN-0042").data
    assert b"Amina Yusuf" not in client.get("/patients?q=nobody").data
    bad = client.post("/patients/new", data={"name": "", "csrf_token": auth.csrf("/patients/new")})
    assert bad.status_code == 400
    client.post(f"/patients/{pid}/edit", data={"name": "Amina Y. Yusuf", "external_id": "KN-0042",
                                                "birth_date": "2016-03-04", "sex": "female", "notes": "murmur?",
                                                "csrf_token": auth.csrf(f"/patients/{pid}/edit")})
    assert web_store.get_patient(pid)["name"] == "Amina Y. Yusuf"
    _upload(client, auth)
    rec = web_store.list_recordings()[0]
    client.post(f"/recordings/{rec.id}/assign", data={"patient_id": str(pid),
                                                      "csrf_token": auth.csrf(f"/recordings/{rec.id}")})
    assert web_store.get_recording(rec.id).patient_id == pid
    client.get(f"/patients/{pid}")
    actions = [(e["action"], e["target"]) for e in web_store.audit_entries()]
    assert ("patient.view", f"patient:{pid}") in actions
    assert ("recording.assign", f"recording:{rec.id}") in actions


def test_exports_carry_the_caution_of_a_normal_from_a_short_recording(client, auth, web_store):
    """The referral's reader sees what the recording page says: a normal from under 10 s says less
    (FHIR: the Observation's note; CSV: the column ``caution``)."""
    auth.login("clinician")
    normal, short = _normal_whole_and_first_6_s()
    for payload in (normal.read_bytes(), short.getvalue()):
        assert _upload(client, auth, data=payload).status_code == 303
    bundle = json.loads(client.get("/export/fhir.json").data)
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    notes = {round(web_store.get_recording(int(o["id"].rsplit("-", 1)[1])).duration_s): o["note"][0]["text"]
             for o in observations}
    assert sorted(notes) == [6, 20]
    assert notes[6].startswith("Screening aid, not a diagnosis. Short recording (6.0 s): a normal result")
    assert notes[20] == "Screening aid, not a diagnosis. Note: uploaded as heart.wav."  # the recording's own note
    rows = list(csv.DictReader(io.StringIO(client.get("/export/records.csv").get_data(as_text=True))))
    cautions = {round(float(r["duration_s"])): r["caution"] for r in rows}
    assert f"{cautions[6]} Note: uploaded as heart.wav." == notes[6].split("diagnosis. ", 1)[1]
    assert cautions[20] == ""


def test_lists_mark_a_normal_from_a_short_recording(client, auth, web_store):
    """Recordings list, patient page (assigned and unassigned tables), a recording's visit table and
    the device page: a normal from under 10 s carries a "short recording" mark whose title is the
    recording page's caution, so no list shows it as a plain normal; the 20 s normal carries none."""
    from model.verdict import caution

    auth.login("admin")
    normal, short = _normal_whole_and_first_6_s()
    pid = web_store.add_patient(name="Amina", external_id="P-1", actor="t")
    assert _upload(client, auth, data=normal.read_bytes(), patient_id=str(pid)).status_code == 303
    assert _upload(client, auth, data=short.getvalue()).status_code == 303
    assert _upload(client, auth, data=short.getvalue(), patient_id=str(pid)).status_code == 303
    with web_store.transaction() as conn:  # the patient's two as one visit at the box, for its table
        conn.execute("UPDATE recordings SET visit = 'visit-1' WHERE patient_id = ?", (pid,))
    recordings = web_store.list_recordings()
    assert sorted(r.verdict for r in recordings) == ["normal"] * 3
    short_rec = next(r for r in recordings if r.duration_s < 10 and r.patient_id == pid)
    expected = caution("normal", short_rec.duration_s)
    assert expected.startswith("Short recording (6.0 s)")
    mark = re.compile(r'<span class="caution-mark short-recording" title="([^"]*)">short recording</span>')
    for url, marks in (("/recordings", 2), (f"/patients/{pid}", 2), (f"/recordings/{short_rec.id}", 1),
                       ("/device", 2)):
        page = client.get(url)
        assert page.status_code == 200, url
        titles = [html.unescape(t) for t in mark.findall(page.get_data(as_text=True))]
        assert titles == [expected] * marks, url


def test_a_normal_that_heard_under_10_s_of_a_longer_recording_is_marked_short(client, auth, web_store):
    """12 s uploaded with the chest piece off the skin for 3 s: the verdict heard about 7 s, so its
    normal carries the short-recording caution (lists, the recording page, the CSV), naming both lengths."""
    import dsp

    auth.login("clinician")
    samples, rate = dsp.read_wav([p for p in reference_wavs() if p.name.startswith("normal")][0])
    samples = samples[: 12 * rate].copy()
    samples[5 * rate:8 * rate] = 0.0
    assert _upload(client, auth, data=dsp.wav_bytes(samples, rate)).status_code == 303
    (rec,) = web_store.list_recordings()
    assert rec.verdict == "normal" and rec.duration_s == 12.0 and 3.0 <= rec.left_out_s <= 4.8
    heard = f"{int((12.0 - rec.left_out_s) * 10) / 10:.1f} s heard of 12.0 s"
    sentence = f"Short recording ({heard}): a normal result"
    for url, where in (("/recordings", 'title="'), (f"/recordings/{rec.id}", 'id="short-recording-caution">')):
        page = html.unescape(client.get(url).get_data(as_text=True))
        assert where + sentence in page, url
    (row,) = csv.DictReader(io.StringIO(client.get("/export/records.csv").get_data(as_text=True)))
    assert row["caution"].startswith(f"Short recording ({heard})")


def _quiet_copy(path, level_dbfs: float) -> bytes:
    """A recording's WAV bytes brought to an RMS level on a 16-bit converter (a gain set low)."""
    import dsp
    from model.train.augment import at_level

    samples, rate = dsp.read_wav(path)
    out = io.BytesIO()
    dsp.write_wav(out, at_level(samples, level_dbfs), rate)
    return out.getvalue()


def test_an_abnormal_from_a_quiet_upload_carries_its_caution_on_its_page_in_lists_and_exports(client, auth,
                                                                                             web_store):
    """An abnormal from a recording below -45 dBFS refers more healthy people: its page says so and
    asks for a louder recording, lists mark it "quiet recording", the exports carry the sentence and
    the level. The same recording at its own level carries none; a recording stored before levels
    were measured (level NULL) none either."""
    from model.verdict import caution

    auth.login("clinician")
    abnormal = next(p for p in reference_wavs() if p.name.startswith("abnormal"))
    for payload in (abnormal.read_bytes(), _quiet_copy(abnormal, -55.0)):
        assert _upload(client, auth, data=payload).status_code == 303
    loud, quiet = sorted(web_store.list_recordings(), key=lambda r: r.id)
    assert loud.verdict == quiet.verdict == "abnormal"
    assert loud.level_dbfs > -30 and -55.5 < quiet.level_dbfs < -54.5
    expected = caution("abnormal", quiet.duration_s, quiet.level_dbfs)
    assert expected.startswith("Quiet recording (-5")
    page = client.get(f"/recordings/{quiet.id}").get_data(as_text=True)
    assert re.search(r'<p class="caution" id="quiet-recording-caution">([^<]*)</p>', page).group(1) == \
        html.escape(expected)
    assert f"level {quiet.level_dbfs:.0f} dBFS" in page
    loud_page = client.get(f"/recordings/{loud.id}").get_data(as_text=True)
    assert "recording-caution" not in loud_page and f"level {loud.level_dbfs:.0f} dBFS" in loud_page
    mark = re.compile(r'<span class="caution-mark quiet-recording" title="([^"]*)">quiet recording</span>')
    titles = [html.unescape(t) for t in mark.findall(client.get("/recordings").get_data(as_text=True))]
    assert titles == [expected]
    rows = {int(r["recording_id"]): r for r in
            csv.DictReader(io.StringIO(client.get("/export/records.csv").get_data(as_text=True)))}
    assert rows[quiet.id]["caution"] == expected and rows[loud.id]["caution"] == ""
    assert float(rows[quiet.id]["level_dbfs"]) == round(quiet.level_dbfs, 1)
    bundle = json.loads(client.get("/export/fhir.json").data)
    notes = {o["id"]: o["note"][0]["text"] for o in (e["resource"] for e in bundle["entry"])
             if o["resourceType"] == "Observation" and o["id"].startswith("observation-")}
    assert notes[f"observation-{quiet.id}"] == f"Screening aid, not a diagnosis. {expected} Note: uploaded as heart.wav."
    assert notes[f"observation-{loud.id}"] == "Screening aid, not a diagnosis. Note: uploaded as heart.wav."
    assert rows[quiet.id]["note"] == "uploaded as heart.wav"
    with web_store.transaction() as conn:  # as if stored by software that did not measure levels
        conn.execute("UPDATE recordings SET level_dbfs = NULL WHERE id = ?", (quiet.id,))
    unmeasured = client.get(f"/recordings/{quiet.id}").get_data(as_text=True)
    assert "recording-caution" not in unmeasured and "dBFS" not in unmeasured.split('id="listen"')[0]


def test_a_silent_recording_shows_silent_instead_of_its_level(client, auth, web_store, tmp_path):
    """A recording with no sound at all is a poor signal for silence; its page says "silent" where
    another shows its level, rather than a meaningless -200 dBFS."""
    import dsp

    auth.login("clinician")
    out = tmp_path / "silent.wav"
    dsp.write_wav(out, np.zeros(20 * 2000, np.float32), 2000)
    assert _upload(client, auth, data=out.read_bytes()).status_code == 303
    rec = web_store.list_recordings()[0]
    assert rec.verdict == "poor_signal" and "silence" in rec.quality_reasons and rec.level_dbfs < -150
    page = client.get(f"/recordings/{rec.id}").get_data(as_text=True)
    assert '<span id="level">silent</span>' in page


def test_device_page_says_when_the_capture_gain_is_set_too_low(client, auth, web_store):
    """The technician's view of the gain: the median level of the box's newest recordings (uploads
    and silent ones left out) and how many were quiet; flagged once most of at least five are quiet."""
    def level_line() -> str:
        page = client.get("/device").get_data(as_text=True)
        return " ".join(page[page.index('<dd id="capture-level"'):].split("</dd>")[0].split())

    def add(n: int, level: float, source: str = "device") -> None:
        web_store.add_recording(file=f"2026/02/{source}-{n}.wav", sha256=f"{n:064d}", duration_s=20.0, rate=48000,
                                source=source, device_id="test-box", verdict="normal", level_dbfs=level)

    auth.login("health_worker")
    assert "no recording made on this box with a measured level yet" in level_line()
    for n, level in enumerate((-30.0, -50.0, -52.0, -200.0)):
        add(n, level)
    add(9, -20.0, source="upload")
    line = level_line()
    assert "median -50 dBFS over the last 3 recordings made on this box, 2 below -45 dBFS" in line
    assert "flash error" not in line  # fewer than five: too few to judge the gain
    add(4, -55.0)
    add(5, -48.0)
    line = level_line()
    assert "median -50 dBFS over the last 5 recordings" in line and "4 below -45 dBFS" in line
    assert 'class="flash error"' in line and "4 below -45 dBFS: the capture gain is set too low" in line
    assert "alsamixer" in line
    for n in range(6, 9):
        add(n, -25.0)
    line = level_line()  # half quiet is not most
    assert "median -39 dBFS over the last 8 recordings" in line and "4 below" in line and "flash error" not in line


def test_device_page_says_how_often_the_box_answers_poor_signal(client, auth, web_store):
    """The technician's view of cable, chest piece and room: how many of the box's newest recordings
    were poor signal (uploads left out), the commonest reason in words, the people the box could not
    judge, flagged once more than a quarter of at least five are poor."""
    from device.records import UNJUDGED_NOTE

    def poor_line() -> str:
        page = html.unescape(client.get("/device").get_data(as_text=True))
        return " ".join(page[page.index('<dd id="poor-signal"'):].split("</dd>")[0].split())

    def add(n: int, verdict: str, reasons=(), source: str = "device", note: str = "") -> None:
        web_store.add_recording(file=f"2026/03/{source}-{n}.wav", sha256=f"{n:064d}", duration_s=20.0, rate=48000,
                                source=source, device_id="test-box", verdict=verdict, quality_reasons=reasons,
                                note=note, captured_at=f"2026-03-01T10:{n:02d}:00+00:00")

    auth.login("health_worker")
    assert "no recording made on this box yet" in poor_line()
    add(0, "normal")
    add(1, "poor_signal", ("model_uncertain",))
    for n in range(2, 5):
        add(n, "abnormal")
    add(9, "poor_signal", ("noisy",), source="upload")  # another device's recording says nothing of this box's
    line = poor_line()
    assert ">1 of the last 5 recordings made on this box, most often: the heart sounds changed" in line
    assert "flash error" not in line and "model_uncertain" not in line
    for n, reasons in ((5, ("clipping",)), (6, ("clipping", "noisy")), (7, ("clipping",))):
        add(n, "poor_signal", reasons, note=UNJUDGED_NOTE if n == 7 else "")
    line = poor_line()  # 4 of 8: half
    assert "4 of the last 8 recordings made on this box, most often: too loud / distorted" in line
    assert "1 person the box could not judge (3 poor signals in a row) and asked to refer" in line
    assert 'class="flash error"' in line and "more than a quarter. Technician: check the chest piece" in line
    for n in range(10, 24):
        add(n, "normal")
    line = poor_line()  # the newest 20 of 22: 3 of them poor, the model_uncertain one has dropped out
    assert ">3 of the last 20 recordings" in line and "flash error" not in line


def test_a_recording_page_gives_advice_for_every_reason_never_its_code(client, auth, web_store):
    from model.verdict import REASON_ADVICE, UNCERTAIN

    rec = web_store.add_recording(file="u.wav", sha256="0" * 64, duration_s=20.0, rate=2000, source="device",
                                  device_id="test-box", verdict="poor_signal", quality_reasons=(UNCERTAIN, "noisy"))
    auth.login("health_worker")
    page = html.unescape(client.get(f"/recordings/{rec}").get_data(as_text=True))
    reasons = page.split('<ul class="reasons">', 1)[1].split("</ul>", 1)[0]
    assert REASON_ADVICE[UNCERTAIN] in reasons and REASON_ADVICE["noisy"] in reasons and UNCERTAIN not in reasons


def test_exports(client, auth, web_store, heartpi_config):
    auth.login("clinician")
    pid = web_store.add_patient(name="=HYPERLINK(\"x\")", external_id="P-9", actor="t")
    _upload(client, auth, patient_id=str(pid))
    rows = list(csv.DictReader(io.StringIO(client.get("/export/records.csv").get_data(as_text=True))))
    assert len(rows) == 1 and rows[0]["patient_name"].startswith("'=")  # no formula injection
    assert rows[0]["verdict"] in ("normal", "abnormal", "poor_signal") and rows[0]["model_sha256"]
    bundle = json.loads(client.get(f"/export/fhir.json?patient_id={pid}").data)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Patient", "Media", "Observation"]
    observation = bundle["entry"][2]["resource"]
    assert observation["subject"]["reference"] == f"Patient/patient-{pid}"
    assert observation["derivedFrom"][0]["reference"] == "Media/media-1"
    assert "model sha256" in observation["method"]["text"]
    media = bundle["entry"][1]["resource"]
    rec = web_store.list_recordings()[0]
    assert base64.b64decode(media["content"]["data"]) == (heartpi_config.recordings_dir / rec.file).read_bytes()
    assert client.get("/export/records.csv?since=2999-01-01").get_data(as_text=True).count("\n") == 1
    assert ("export.fhir", f"patient:{pid}") in [(e["action"], e["target"]) for e in web_store.audit_entries()]
    transaction = json.loads(client.get(f"/export/fhir-transaction.json?patient_id={pid}").data)
    assert transaction["type"] == "transaction" and [e["request"]["url"] for e in transaction["entry"]] == [
        f"Patient/test-box-patient-{pid}", "Media/test-box-media-1", "Observation/test-box-observation-1"]
    assert transaction["entry"][2]["resource"]["subject"]["reference"] == f"Patient/test-box-patient-{pid}"
    assert ("export.fhir-transaction", f"patient:{pid}") in [(e["action"], e["target"])
                                                             for e in web_store.audit_entries()]
    # the Export page sends a hidden audio=0, then its checkbox's audio=1 when ticked
    for query, with_audio in (("audio=0&audio=1", True), ("audio=0", False), ("", True)):
        for url in ("/export/fhir.json", "/export/fhir-transaction.json"):
            entries = json.loads(client.get(f"{url}?patient_id={pid}&{query}").data)["entry"]
            assert ("data" in entries[1]["resource"]["content"]) is with_audio, (url, query)


def test_backup_download_is_a_valid_database(client, auth, tmp_path):
    auth.login("admin")
    response = client.get("/export/backup.sqlite3")
    assert response.status_code == 200
    target = tmp_path / "b.sqlite3"
    target.write_bytes(response.data)
    conn = sqlite3.connect(target)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] >= 1


def test_whole_device_backup_download_restores_on_another_device(client, auth, web_store, heartpi_config,
                                                                   tmp_path):
    from device.backup import restore_backup
    from device.config import config_from_mapping
    from device.storage import store_recording

    patient = web_store.add_patient(name="Amina K.", actor="t")
    for wav in reference_wavs()[:2]:
        relative, sha = store_recording(heartpi_config.recordings_dir, wav.read_bytes())
        web_store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                                device_id="test-box", verdict="normal", patient_id=patient)
    heartpi_config.cache_dir.mkdir(parents=True, exist_ok=True)
    stale, fresh = heartpi_config.cache_dir / ".backup-killed.sqlite3", heartpi_config.cache_dir / ".backup-now.sqlite3"
    stale.write_bytes(b"left by a killed download")
    fresh.write_bytes(b"another download's, still streaming")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    auth.login("admin")
    page = client.get("/export").get_data(as_text=True)
    assert 'href="/export/backup.tar"' in page and "keep it as safe as the device" in page
    response = client.get("/export/backup.tar")
    assert response.status_code == 200 and response.mimetype == "application/x-tar"
    assert "heartpi-test-box-" in response.headers["Content-Disposition"]
    archive = tmp_path / "download.tar"
    archive.write_bytes(response.get_data())
    assert list(heartpi_config.cache_dir.glob(".backup-*")) == [fresh]  # ours gone once streamed, the stale too
    (entry,) = [e for e in web_store.audit_entries() if e["action"] == "backup.download"]
    assert entry["detail"] == "whole device: 2 recordings" and entry["actor"].startswith("user:")

    other = config_from_mapping({"storage": {"data_dir": str(tmp_path / "replacement")}}, env={})
    result = restore_backup(other, archive)
    assert (result.recordings, result.patients, result.device_id) == (2, 1, "test-box")
    for rec in web_store.list_recordings():
        assert (other.recordings_dir / rec.file).read_bytes() == (heartpi_config.recordings_dir / rec.file).read_bytes()


def test_device_page_asks_for_a_backup_until_one_is_made(client, auth, web_store, heartpi_config):
    from device.storage import store_recording

    auth.login("admin")
    assert 'class="flash error"' not in _last_backup(client)  # nothing recorded: nothing to lose yet
    relative, sha = store_recording(heartpi_config.recordings_dir, reference_wavs()[0].read_bytes())
    web_store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                            device_id="test-box", verdict="normal")
    due = _last_backup(client)
    assert "never" in due and 'class="flash error"' in due and 'href="/export"' in due
    client.get("/export/backup.sqlite3")  # the database alone is not a whole-device backup
    assert "never" in _last_backup(client)
    assert client.get("/export/backup.tar").status_code == 200
    done = _last_backup(client)
    assert "(0 days ago)" in done and "flash error" not in done
    auth.logout()
    auth.login("health_worker")
    assert "(0 days ago)" in _last_backup(client)


def test_device_page_says_when_records_last_reached_the_fhir_server(client, auth, web_store):
    from webui.exporting import FHIR_SEND_FAILED, FHIR_SENT

    auth.login("health_worker")
    assert 'id="fhir-send"' not in _device_page(client)  # never tried: nothing to say
    web_store.audit("cli:export", FHIR_SEND_FAILED, "", "-..- to fhir.region.example: could not reach it")
    line = _fhir_send_line(client)
    assert "never;" in line and "failing since " in line
    assert ": -..- to fhir.region.example: could not reach it" in line
    assert "flash error" in line and "--send</code> again" in line
    web_store.audit("cli:export", FHIR_SENT, "", "-..- to fhir.region.example: 12 recordings, 40 resources "
                    "created, 0 updated")
    line = _fhir_send_line(client)
    assert "12 recordings, 40 resources created" in line and "failing" not in line and "flash error" not in line
    web_store.audit("cli:export", FHIR_SEND_FAILED, "", "-..- to fhir.region.example: HTTP 401")
    line = _fhir_send_line(client)
    assert "12 recordings" in line and "failing since" in line and "UTC: -..- to fhir.region.example: HTTP 401" in line


def test_device_page_counts_what_the_fhir_server_has_not_been_sent(app, client, auth, web_store):
    """With fhir.server_url set (heartpi-fhir-sync.timer sends every hour) the line is there before
    any send, and says how many recordings were made or changed since the server last took them."""
    import dataclasses

    from device.config import FhirSection

    config = app.extensions["heartpi_config"]
    app.extensions["heartpi_config"] = dataclasses.replace(config, fhir=FhirSection(server_url="https://fhir.region.example/fhir"))
    first = web_store.add_recording(file="a.wav", sha256="0" * 64, duration_s=20, rate=48000, source="device",
                                    device_id="box", verdict="normal")
    second = web_store.add_recording(file="b.wav", sha256="1" * 64, duration_s=20, rate=48000, source="device",
                                     device_id="box", verdict="abnormal")
    auth.login("health_worker")
    line = _fhir_send_line(client)
    assert line.startswith('<dd id="fhir-send"> never; 2 recordings made or changed since, not yet on '
                           'fhir.region.example (sent every hour)')
    web_store.mark_fhir_sent("https://fhir.region.example/fhir", web_store.get_recording(second).changed_seq)
    assert "fhir.region.example has every record" in _fhir_send_line(client)
    web_store.set_finding(first, "normal", actor="t")
    assert "1 recording made or changed since, not yet on fhir.region.example" in _fhir_send_line(client)
    web_store.delete_recordings([second], actor="t", reason="test", from_fhir_server=True)
    assert "1 recording made or changed since and 2 deletions, not yet on" in _fhir_send_line(client)
    auth.logout()
    auth.login("admin")  # who may delete is told the server deletes too
    assert "and from the region's FHIR server (fhir.region.example) at its next hourly send" in \
        client.get(f"/recordings/{first}").get_data(as_text=True)
    patient = web_store.add_patient(name="Ama", actor="t")
    assert "The region's FHIR server (fhir.region.example) deletes the patient" in \
        client.get(f"/patients/{patient}").get_data(as_text=True)
    app.extensions["heartpi_config"] = config
    assert "FHIR server" not in client.get(f"/recordings/{first}").get_data(as_text=True)
    app.extensions["heartpi_config"] = dataclasses.replace(config, fhir=FhirSection(server_url="https://fhir.region.example/fhir"))
    web_store.audit("fhir-sync", "export.fhir-send-failed", "", "changes to fhir.region.example: HTTP 401")
    line = _fhir_send_line(client)
    assert "flash error" in line and "failing since" in line and "UTC: changes to fhir.region.example: HTTP 401" in line
    assert "run <code>sudo heartpi fhir-sync</code> (or wait for the next hourly try)" in line


def test_an_admin_sends_to_the_fhir_server_now_through_the_sending_service(app, client, auth, web_store):
    """"Send now" writes a request for heartpi-fhir-sync.path (the page holds no token); the page
    says it waits, and that the service is not running when nothing took it within a minute."""
    import dataclasses
    import os
    import time

    from device.config import FhirSection
    from device.send_request import REQUEST_FILE

    config = app.extensions["heartpi_config"]
    request_file = config.send_request_dir / REQUEST_FILE
    auth.login("admin")
    assert "Send to the FHIR server now" not in _device_page(client)  # no server set
    client.post("/admin/fhir-send", data={"csrf_token": auth.csrf("/device")})
    assert not request_file.exists() and "No FHIR server is set" in _device_page(client)
    app.extensions["heartpi_config"] = dataclasses.replace(config, fhir=FhirSection(server_url="https://fhir.region.example/fhir"))
    assert "Send to the FHIR server now" in _device_page(client)
    answer = client.post("/admin/fhir-send", data={"csrf_token": auth.csrf("/device")})
    assert answer.status_code == 303 and request_file.exists()
    assert json.loads(request_file.read_text())["requested_by"] == "admin@clinic.test"
    page = " ".join(html.unescape(_device_page(client)).split())
    assert "A send asked for by admin@clinic.test is waiting to start." in page
    assert "heartpi-fhir-sync service is not running" not in page
    assert "Send to the FHIR server now" not in page  # one request at a time
    request_file.write_text("[1]")  # JSON, but not a request's: still a request waiting, from no one known
    assert "A send asked for by ? is waiting to start." in " ".join(html.unescape(_device_page(client)).split())
    old = time.time() - 120
    os.utime(request_file, (old, old))
    assert "the heartpi-fhir-sync service is not running" in " ".join(html.unescape(_device_page(client)).split())
    assert web_store.audit_entries(action="device.fhir-send-now")[0]["detail"] == "fhir.region.example"
    auth.logout()
    auth.login("clinician")
    assert client.post("/admin/fhir-send", data={"csrf_token": auth.csrf("/device")}).status_code == 403


def _fhir_send_line(client) -> str:
    page = html.unescape(_device_page(client))
    return " ".join(page[page.index('<dd id="fhir-send"'):].split("</dd>")[0].split())


def _last_backup(client) -> str:
    page = client.get("/device").get_data(as_text=True)
    return page[page.index('<dd id="last-backup"'):].split("</dd>")[0]


def test_device_page_shows_state_versions_and_disk(client, auth, web_store):
    web_store.set_status("state", "idle")
    auth.login("health_worker")
    page = client.get("/device").get_data(as_text=True)
    assert "test-box" in page and "idle" in page and "MB of" in page and "heartpi-cnn" in page


def _device_page(client) -> str:
    return client.get("/device").get_data(as_text=True)


def test_device_page_shows_its_clock_and_only_admins_may_set_it(client, auth, heartpi_config):
    auth.login("health_worker")
    page = _device_page(client)
    epoch_ms = int(re.search(r'id="device-clock" data-epoch-ms="(\d+)"', page).group(1))
    assert abs(epoch_ms / 1000 - time.time()) < 60
    assert 'id="clock-form"' not in page and "An administrator can set it" in page
    token = auth.csrf("/device")
    refused = client.post("/admin/clock", data={"csrf_token": token, "browser_epoch_ms": str(int(time.time() * 1000))})
    assert refused.status_code == 403
    assert not (heartpi_config.clock_dir / "request.json").exists()


def test_admin_sends_the_browsers_time_to_the_device(client, auth, web_store, heartpi_config):
    from device.clock import pending_request

    auth.login("admin")
    assert 'id="clock-form"' in _device_page(client)
    token = auth.csrf("/device")
    ahead_ms = int((time.time() + 3 * 3600 + 12 * 60) * 1000)
    response = client.post("/admin/clock", data={"csrf_token": token, "browser_epoch_ms": str(ahead_ms)},
                           follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "The device clock is 3 h 12 min behind; it will be set within a few seconds" in page
    request, _ = pending_request(heartpi_config.clock_dir)
    assert request.offset_s == pytest.approx(11520, abs=30) and request.requested_by == "admin@clinic.test"
    assert "A clock change sent by admin@clinic.test is waiting" in page and "heartpi-clock service" not in page
    assert ("device.clock", "") in [(e["action"], e["target"]) for e in web_store.audit_entries()]

    same = client.post("/admin/clock", data={"csrf_token": token, "browser_epoch_ms": str(int(time.time() * 1000))},
                       follow_redirects=True)
    assert "already agrees with this computer" in same.get_data(as_text=True)


def test_clock_form_without_javascript_and_its_mistakes(client, auth, heartpi_config):
    import datetime as dt

    auth.login("admin")
    token = auth.csrf("/device")
    # two days and 31-90 s ahead once the seconds are cut off: "2 d"
    typed = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2, seconds=90)).strftime("%Y-%m-%d %H:%M")
    ok = client.post("/admin/clock", data={"csrf_token": token, "utc_time": typed}, follow_redirects=True)
    assert "The device clock is 2 d behind" in ok.get_data(as_text=True)
    (heartpi_config.clock_dir / "request.json").unlink()
    for form, message in (({"utc_time": "tomorrow"}, "enter the current UTC time as YYYY-MM-DD HH:MM"),
                          ({"browser_epoch_ms": "soon"}, "the browser sent an unreadable time"),
                          ({"browser_epoch_ms": "9" * 400}, "the browser sent an unreadable time"),
                          ({"utc_time": "1999-12-31 23:59"}, "the time sent (1999-12-31 23:59 UTC) cannot be right; check this computer")):
        page = client.post("/admin/clock", data={"csrf_token": token, **form}, follow_redirects=True).get_data(as_text=True)
        assert "The device clock was not changed: " + message in html.unescape(page), form
        assert not (heartpi_config.clock_dir / "request.json").exists()


def test_device_page_says_when_the_clock_was_set_back_or_the_service_is_missing(client, auth, web_store,
                                                                               heartpi_config):
    import os

    from device.clock import apply_clock_request, request_clock_change

    auth.login("clinician")
    wav = reference_wavs()[0]
    web_store.add_recording(file=wav.name, sha256="0" * 64, duration_s=20.0, rate=2000,
                        captured_at="2031-05-01T10:00:00+00:00", source="device", device_id="test-box")
    assert "behind its newest recording (2031-05-01 10:00 UTC)" in _device_page(client)

    request_clock_change(heartpi_config.clock_dir, time.time() + 7200, requested_by="admin@clinic.test")
    stale = time.time() - 120
    os.utime(heartpi_config.clock_dir / "request.json", (stale, stale))
    assert "the heartpi-clock service is not running" in _device_page(client)

    apply_clock_request(heartpi_config.clock_dir, set_clock=lambda _: None)
    page = _device_page(client)
    assert "is waiting" not in page
    assert re.search(r"asked for by admin@clinic.test:\s+clock moved forward by 2 h\.", page)


def _stored_recording(config, store) -> int:
    from device.storage import store_recording

    relative, sha = store_recording(config.recordings_dir, reference_wavs()[0].read_bytes())
    return store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                               device_id="test-box", verdict="normal")


def test_admin_deletes_a_recording_with_a_reason(client, auth, web_store, heartpi_config):
    rec_id = _stored_recording(heartpi_config, web_store)
    path = heartpi_config.recordings_dir / web_store.get_recording(rec_id).file
    auth.login("admin")
    assert 'id="delete"' in client.get(f"/recordings/{rec_id}").get_data(as_text=True)
    token = auth.csrf(f"/recordings/{rec_id}")
    unconfirmed = client.post(f"/recordings/{rec_id}/delete", data={"csrf_token": token, "reason": "test"},
                              follow_redirects=True)
    assert "Tick the box to confirm" in unconfirmed.get_data(as_text=True)
    no_reason = client.post(f"/recordings/{rec_id}/delete", data={"csrf_token": token, "confirm": "yes"},
                            follow_redirects=True)
    assert "was not deleted: say why" in no_reason.get_data(as_text=True)
    assert web_store.get_recording(rec_id) is not None and path.exists()

    done = client.post(f"/recordings/{rec_id}/delete", data={"csrf_token": token, "confirm": "yes",
                                                             "reason": "wrong patient"})
    assert done.status_code == 303 and done.headers["Location"].endswith("/recordings")
    assert f"Recording {rec_id} deleted" in client.get("/recordings").get_data(as_text=True)
    assert web_store.get_recording(rec_id) is None and not path.exists()
    assert client.get(f"/recordings/{rec_id}").status_code == 404
    (entry,) = [e for e in web_store.audit_entries() if e["action"] == "recording.delete"]
    assert entry["actor"].endswith("admin@clinic.test") and entry["detail"].endswith(": wrong patient")


@pytest.mark.parametrize("role", ["clinician", "health_worker"])
def test_only_admins_may_delete_recordings(client, auth, web_store, heartpi_config, role):
    rec_id = _stored_recording(heartpi_config, web_store)
    auth.login(role)
    assert 'id="delete"' not in client.get(f"/recordings/{rec_id}").get_data(as_text=True)
    token = auth.csrf(f"/recordings/{rec_id}")
    refused = client.post(f"/recordings/{rec_id}/delete", data={"csrf_token": token, "confirm": "yes",
                                                                "reason": "tidying up"})
    assert refused.status_code == 403 and web_store.get_recording(rec_id) is not None


@pytest.mark.parametrize("with_recordings", [False, True])
def test_admin_deletes_a_patient_keeping_or_deleting_their_recordings(client, auth, web_store, heartpi_config,
                                                                       with_recordings):
    pid = web_store.add_patient(name="Ama Owusu", external_id="AO-1", actor="test")
    rec_id = _stored_recording(heartpi_config, web_store)
    web_store.assign_recording(rec_id, pid, actor="test")
    path = heartpi_config.recordings_dir / web_store.get_recording(rec_id).file
    auth.login("admin")
    assert 'id="delete"' in client.get(f"/patients/{pid}").get_data(as_text=True)
    token = auth.csrf(f"/patients/{pid}")
    form = {"csrf_token": token, "reason": "consent withdrawn"}
    unconfirmed = client.post(f"/patients/{pid}/delete", data=form, follow_redirects=True)
    assert "Tick the box to confirm" in unconfirmed.get_data(as_text=True) and web_store.get_patient(pid)
    no_reason = client.post(f"/patients/{pid}/delete", data={**form, "confirm": "yes", "reason": " x "},
                            follow_redirects=True)
    assert "Say why the patient is deleted (it is kept in the audit log)." in no_reason.get_data(as_text=True)
    assert web_store.get_patient(pid)

    form.update(confirm="yes", **({"with_recordings": "yes"} if with_recordings else {}))
    page = client.post(f"/patients/{pid}/delete", data=form, follow_redirects=True).get_data(as_text=True)
    assert web_store.get_patient(pid) is None and client.get(f"/patients/{pid}").status_code == 404
    if with_recordings:
        assert "1 recording(s) deleted, 0 kept" in page
        assert web_store.get_recording(rec_id) is None and not path.exists()
    else:
        assert "0 recording(s) deleted, 1 kept without a patient" in page
        assert web_store.get_recording(rec_id).patient_id is None and path.exists()
    entries = [e for e in web_store.audit_entries() if e["action"] in ("patient.delete", "recording.delete")]
    assert [e["action"] for e in entries].count("recording.delete") == int(with_recordings)
    assert all("Ama" not in e["detail"] and "AO-1" not in e["detail"] for e in web_store.audit_entries())


def test_only_admins_may_delete_patients(client, auth, web_store):
    pid = web_store.add_patient(name="Kwame", actor="test")
    auth.login("clinician")
    assert 'id="delete"' not in client.get(f"/patients/{pid}").get_data(as_text=True)
    token = auth.csrf(f"/patients/{pid}")
    refused = client.post(f"/patients/{pid}/delete", data={"csrf_token": token, "confirm": "yes", "reason": "dup"})
    assert refused.status_code == 403 and web_store.get_patient(pid) is not None


def test_admin_reads_and_downloads_the_audit_log(client, auth, web_store):
    pid = web_store.add_patient(name="Esi", actor="test")
    other = web_store.add_patient(name="Yaw", actor="test")
    auth.login("clinician", email="nurse@clinic.test")
    client.get(f"/patients/{pid}")
    client.get(f"/patients/{other}")
    auth.logout()
    auth.login("admin")
    assert 'id="patient-audit"' in client.get(f"/patients/{pid}").get_data(as_text=True)
    page = client.get(f"/admin/audit?target=patient:{pid}").get_data(as_text=True)
    rows = re.findall(r"<tr><td>[^<]+</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td>", page)
    assert ("user:", "patient.view") in {(who[:5], action) for who, action, _ in rows}
    assert any(who.endswith("nurse@clinic.test") for who, _, _ in rows)
    assert {about for _, _, about in rows} == {f"patient:{pid}"}  # the other patient's views are not shown
    only_creations = client.get("/admin/audit?action=patient.cr").get_data(as_text=True)
    assert "patient.create" in only_creations and "patient.view" not in only_creations
    assert "No entries." in client.get("/admin/audit?action=100%").get_data(as_text=True)  # % is literal

    csv_response = client.get(f"/admin/audit.csv?target=patient:{pid}")
    assert csv_response.mimetype == "text/csv"
    lines = list(csv.reader(io.StringIO(csv_response.get_data(as_text=True))))
    assert lines[0] == ["id", "at", "actor", "action", "target", "detail"]
    assert all(line[4] == f"patient:{pid}" for line in lines[1:]) and len(lines) >= 3
    assert ("audit.export", f"patient:{pid}") in [(e["action"], e["target"]) for e in web_store.audit_entries()]


def test_audit_csv_streams_every_entry_in_pages(client, auth, web_store, monkeypatch):
    from webui import admin

    monkeypatch.setattr(admin, "AUDIT_CSV_PAGE", 3)
    for i in range(10):
        web_store.audit("test", "paging.check", f"item:{i}")
    auth.login("admin")
    lines = list(csv.reader(io.StringIO(client.get("/admin/audit.csv?action=paging.").get_data(as_text=True))))
    assert [line[4] for line in lines[1:]] == [f"item:{i}" for i in reversed(range(10))]


def test_the_audit_page_goes_back_a_page_at_a_time(client, auth, web_store, monkeypatch):
    """Nothing in the log is out of an administrator's reach on the page: "Older" walks back,
    page by page, keeping the filter, and "Newest" returns."""
    from webui import admin

    monkeypatch.setattr(admin, "AUDIT_PAGE_ROWS", 4)
    for i in range(10):
        web_store.audit("test", "paging.check", f"item:{i}")
    auth.login("admin")
    pages, url = [], "/admin/audit?action=paging."
    while url and len(pages) < 5:  # 3 pages are due: a link that never ends must fail, not hang
        page = html.unescape(client.get(url).get_data(as_text=True))
        pages.append(re.findall(r"<td>(item:\d+)</td>", page))
        assert ("Newest" in page) == (len(pages) > 1)
        older = re.search(r'rel="next" class="pager-forward" href="([^"]+)"', page)
        url = older.group(1) if older else None
        assert url is None or "action=paging." in url
    assert pages == [[f"item:{i}" for i in range(9, 5, -1)], [f"item:{i}" for i in range(5, 1, -1)],
                     ["item:1", "item:0"]]
    assert "pager" not in client.get("/admin/audit?action=paging.check&target=item:3").get_data(as_text=True)


def test_audit_csv_cannot_carry_a_spreadsheet_formula(client, auth, web_store):
    web_store.audit("user:9:x@clinic.test", "recording.delete", "recording:1", '=HYPERLINK("http://evil")')
    auth.login("admin")
    lines = list(csv.reader(io.StringIO(client.get("/admin/audit.csv?action=recording.delete").get_data(as_text=True))))
    assert lines[1][5] == "'=HYPERLINK(\"http://evil\")"


@pytest.mark.parametrize("role", ["clinician", "health_worker"])
def test_only_admins_read_the_audit_log(client, auth, role):
    auth.login(role)
    assert client.get("/admin/audit").status_code == 403
    assert client.get("/admin/audit.csv").status_code == 403
    assert 'href="/admin/audit"' not in client.get("/recordings").get_data(as_text=True)


def test_user_add_cli_reads_password_from_stdin(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, HEARTPI_DATA_DIR=str(tmp_path))
    env.pop("HEARTPI_CONFIG", None)
    cmd = [sys.executable, "-m", "heartpi.cli", "user", "add", "--role", "admin", "boss@clinic.test"]
    ok = subprocess.run(cmd, input="a long admin password\n", capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    again = subprocess.run(cmd, input="a long admin password\n", capture_output=True, text=True, env=env)
    assert again.returncode == 1 and "already exists" in again.stderr
    short = subprocess.run(cmd[:-1] + ["x@clinic.test"], input="short\n", capture_output=True, text=True, env=env)
    assert short.returncode == 1 and "too short" in short.stderr


def test_the_recording_page_prints_for_a_referral(client, auth, web_store):
    """Who the paper is about comes from the patient record; an unassigned recording leaves a
    line to write it on. What is only for the screen is marked so."""
    pid = web_store.add_patient(name="Ama Owusu", external_id="AO-12", birth_date="2019-04-02", sex="female",
                                actor="test")
    assigned = web_store.add_recording(file="a.wav", sha256="0" * 64, duration_s=20.0, rate=2000, source="device",
                                       device_id="test-box", verdict="abnormal", patient_id=pid)
    loose = web_store.add_recording(file="b.wav", sha256="1" * 64, duration_s=20.0, rate=2000, source="device",
                                    device_id="test-box", verdict="normal")
    auth.login("health_worker")
    page = html.unescape(client.get(f"/recordings/{assigned}").get_data(as_text=True))
    referral = page.split('id="referral"', 1)[1].split("</section>", 1)[0]
    assert "Heart-sound screening: referral" in referral
    assert "Ama Owusu, number AO-12, born 2019-04-02, female" in referral and f"recording {assigned}" in referral
    assert 'class="print-only" id="referral"' in page
    for screen_only in ('id="listen-form" class="no-print"', 'class="no-print" controls', 'class="card no-print" id="patient"',
                        'class="card no-print" id="site"', 'class="card no-print" id="finding"'):
        assert screen_only in page, screen_only
    page = html.unescape(client.get(f"/recordings/{loose}").get_data(as_text=True))
    referral = page.split('id="referral"', 1)[1].split("</section>", 1)[0]
    assert "Heart-sound screening: normal" in referral and "not assigned on the device: name, number" in referral
