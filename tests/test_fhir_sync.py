"""`heartpi fhir-sync` (heartpi-fhir-sync.timer, every hour): the FHIR server set in
fhir.server_url is sent what changed since the last send that went through, and nothing else.

Against the small FHIR server of tests/test_fhir_send.py on a real socket, through the command
line as the timer's service runs it, with the device's real SQLite database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from device.records import RecordStore
from heartpi.fhir_send import FhirSendError
from heartpi.fhir_sync import NO_TOKEN, TOKEN_CREDENTIAL, read_token
from tests.test_fhir_send import TOKEN, FhirServer, _audit, make_device
from tests.test_tools import run_cli


@pytest.fixture
def box(tmp_path, fhir_server):
    """The device of tests/test_fhir_send.py (four recordings, one visit of two), a config that
    names the server, and its token as the service's systemd credential."""
    env, token, data = make_device(tmp_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / TOKEN_CREDENTIAL).write_text(token.read_text())
    return {"data": data, "config": _config(tmp_path, data, fhir_server.url),
            "env": {"HEARTPI_CONFIG": str(tmp_path / "heartpi.toml"), "CREDENTIALS_DIRECTORY": str(credentials)}}


def _config(tmp_path: Path, data: Path, url: str, **fhir) -> Path:
    path = tmp_path / "heartpi.toml"
    extra = "".join(f"{k} = {v}\n" for k, v in fhir.items())
    path.write_text(f'[device]\nid = "box"\n[storage]\ndata_dir = "{data}"\n[fhir]\nserver_url = "{url}"\n{extra}')
    return path


def _sync(box, *extra):
    result = run_cli("fhir-sync", *extra, env=box["env"])
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _media_sent(request) -> list[str]:
    return sorted(e["resource"]["id"] for e in request["bundle"]["entry"] if e["resource"]["resourceType"] == "Media")


def _store(box) -> RecordStore:
    return RecordStore(box["data"] / "heartpi.sqlite3")


def test_only_what_changed_goes_and_a_quiet_hour_sends_nothing(box, fhir_server):
    first = _sync(box)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "PASS  FHIR server: 4 changed recording(s) in 1 transaction(s) to 127.0.0.1" in first.stdout
    assert "11 resources created, 0 updated" in first.stdout and len(fhir_server.resources) == 11
    quiet = _sync(box)
    assert quiet.returncode == 0 and "has every record: nothing changed since the last send" in quiet.stdout
    assert len(fhir_server.requests) == 1
    store = _store(box)
    kofi = next(r for r in store.list_recordings() if r.visit is None and r.patient_id)
    store.set_finding(kofi.id, "abnormal", "echo: mitral regurgitation", actor="t")
    store.close()
    third = _sync(box)
    # its Media, verdict and patient again, and the clinician's finding, new
    assert "1 changed recording(s) in 1 transaction(s)" in third.stdout and "1 resources created, 3 updated" in third.stdout
    sent = fhir_server.requests[-1]["bundle"]["entry"]
    assert sorted(e["resource"]["resourceType"] for e in sent) == ["Media", "Observation", "Observation", "Patient"]
    finding = [e["resource"] for e in sent if e["resource"]["resourceType"] == "Observation"]
    assert any("mitral regurgitation" in str(o) for o in finding)
    # a patient's new name reaches the server with their recordings, the visit's Encounter with them
    store = _store(box)
    ama = store.get_recording(1).patient_id
    store.update_patient(ama, name="Ama Owusu-Mensah", actor="t")
    store.close()
    fourth = _sync(box)
    assert "2 changed recording(s)" in fourth.stdout
    assert [e["resource"]["resourceType"] for e in fhir_server.requests[-1]["bundle"]["entry"]].count("Encounter") == 1
    assert "Ama Owusu-Mensah" in str(fhir_server.resources)
    assert [a.split(":")[0] for a in _audit(box["data"])] == ["sent"] * 3  # the quiet hour is not audited
    assert _audit(box["data"])[0].startswith(f"sent: changes to {fhir_server.url.split('/')[2]}: 2 recordings")


def test_a_failure_part_way_keeps_what_went_and_the_next_hour_sends_the_rest(box, fhir_server, tmp_path):
    _config(tmp_path, box["data"], fhir_server.url, batch=1)
    fhir_server.fail_from = 2
    failed = _sync(box)
    assert failed.returncode == 1
    assert "FAIL  FHIR server: the FHIR server at 127.0.0.1" in failed.stdout and "HAPI-0550" in failed.stdout
    first = _media_sent(fhir_server.requests[0])  # one recording, or a visit's two
    assert f"({len(first)} of 4 recordings were sent before it" in failed.stdout
    assert _audit(box["data"])[0].startswith("failed: changes to 127.0.0.1:")
    fhir_server.fail_from = None
    fhir_server.requests.clear()
    rest = _sync(box)
    assert rest.returncode == 0 and f"{4 - len(first)} changed recording(s)" in rest.stdout
    again = sorted(m for r in fhir_server.requests for m in _media_sent(r))
    assert len(again) == 4 - len(first) and not set(first) & set(again)  # what went first is not sent twice
    assert len(fhir_server.resources) == 11


def test_a_new_server_or_all_gets_everything(box, fhir_server, tmp_path):
    assert _sync(box).returncode == 0
    other = FhirServer()
    try:
        _config(tmp_path, box["data"], other.url)
        assert "4 changed recording(s)" in _sync(box).stdout and len(other.resources) == 11
        assert "nothing changed" in _sync(box).stdout
        everything = _sync(box, "--all")
        assert "4 changed recording(s)" in everything.stdout and "0 resources created, 11 updated" in everything.stdout
        assert _audit(box["data"])[0].startswith(f"sent: all records to {other.url.split('/')[2]}: 4 recordings")
    finally:
        other.close()


def test_without_a_server_set_nothing_is_sent_and_nothing_fails(box, tmp_path):
    _config(tmp_path, box["data"], "")
    result = _sync(box)
    assert result.returncode == 0 and "no FHIR server is set (fhir.server_url" in result.stdout
    assert _audit(box["data"]) == []


def test_a_missing_token_file_behind_the_credential_sends_none_and_the_refusal_is_shown(box, fhir_server, tmp_path):
    (Path(box["env"]["CREDENTIALS_DIRECTORY"]) / TOKEN_CREDENTIAL).write_text(NO_TOKEN)
    result = _sync(box)
    assert result.returncode == 1 and "did not accept the credentials (HTTP 401" in result.stdout
    assert "Authorization" not in fhir_server.requests[0]["headers"]
    assert _audit(box["data"])[0].startswith(f"failed: changes to {fhir_server.url.split('/')[2]}: the FHIR server at")
    store = _store(box)
    try:
        assert store.fhir_sent_through(fhir_server.url)[0] == 0  # nothing counted as sent
    finally:
        store.close()


def test_the_token_comes_from_the_option_then_the_credential_then_the_file(tmp_path):
    option, default = tmp_path / "option", tmp_path / "etc-heartpi-fhir-token"
    option.write_text(" from-option\n")
    default.write_text("from-file\n")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / TOKEN_CREDENTIAL).write_text(TOKEN)
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    assert read_token(option, environ=env, default_file=default) == "from-option"
    assert read_token(None, environ=env, default_file=default) == TOKEN
    (credentials / TOKEN_CREDENTIAL).write_text(NO_TOKEN + "\n")
    assert read_token(None, environ=env, default_file=default) == ""  # the unit's stand-in: no file behind it
    assert read_token(None, environ={}, default_file=default) == "from-file"
    assert read_token(None, environ={}, default_file=tmp_path / "none-here") == ""
    with pytest.raises(FhirSendError, match="the token file .*missing does not exist"):
        read_token(tmp_path / "missing", environ=env, default_file=default)


def test_the_audio_stays_on_the_device_when_the_config_says_so(box, fhir_server, tmp_path):
    _config(tmp_path, box["data"], fhir_server.url)
    assert _sync(box).returncode == 0
    assert all("data" in r["content"] for url, r in fhir_server.resources.items() if url.startswith("Media/"))
    other = FhirServer()
    try:
        _config(tmp_path, box["data"], other.url, include_audio="false")
        assert _sync(box).returncode == 0
        media = [r for url, r in other.resources.items() if url.startswith("Media/")]
        assert len(media) == 4 and not any("data" in m["content"] for m in media)
    finally:
        other.close()


def _delete(box, rec_ids, *, from_fhir_server: bool) -> None:
    from device.retention import delete_recordings

    store = _store(box)
    try:
        recs = [store.get_recording(i) for i in rec_ids]
        delete_recordings(store, box["data"] / "recordings", box["data"] / "cache", recs, actor="t",
                          reason="test recording" if from_fhir_server else "card full", from_fhir_server=from_fhir_server)
    finally:
        store.close()


def test_what_staff_delete_leaves_the_server_and_what_is_pruned_stays(box, fhir_server):
    assert _sync(box).returncode == 0 and len(fhir_server.resources) == 11
    store = _store(box)
    kofi_rec = next(r for r in store.list_recordings() if r.visit is None and r.patient_id)
    unassigned = next(r for r in store.list_recordings() if r.patient_id is None)
    store.close()
    _delete(box, [kofi_rec.id], from_fhir_server=True)
    result = _sync(box)
    assert result.returncode == 0 and "to 127.0.0.1" in result.stdout
    assert "2 resource(s) deleted there, as on this device" in result.stdout
    assert f"Media/box-media-{kofi_rec.id}" not in fhir_server.resources and len(fhir_server.resources) == 9
    assert f"Patient/box-patient-{kofi_rec.patient_id}" in fhir_server.resources  # the patient was not deleted
    _delete(box, [unassigned.id], from_fhir_server=False)
    assert "nothing changed" in _sync(box).stdout and f"Media/box-media-{unassigned.id}" in fhir_server.resources
    assert _audit(box["data"])[0].endswith("0 recordings, 0 resources created, 0 updated, 2 deleted")


def test_a_deleted_patient_leaves_the_server_once_their_kept_recordings_stop_naming_them(box, fhir_server):
    assert _sync(box).returncode == 0
    store = _store(box)
    ama = store.get_recording(1).patient_id
    store.delete_patient(ama, actor="t", reason="consent withdrawn")  # the recordings stay, unassigned
    store.close()
    result = _sync(box)
    assert result.returncode == 0, result.stdout
    assert "2 changed recording(s)" in result.stdout and "1 resource(s) deleted there" in result.stdout
    assert f"Patient/box-patient-{ama}" not in fhir_server.resources
    assert f"Patient/box-patient-{ama}" not in str(fhir_server.resources)  # nothing names them any more


def test_a_deletion_the_server_refuses_is_shown_retried_and_holds_back_no_new_record(box, fhir_server):
    assert _sync(box).returncode == 0
    store = _store(box)
    kofi_rec = next(r for r in store.list_recordings() if r.visit is None and r.patient_id)
    store.close()
    _delete(box, [kofi_rec.id], from_fhir_server=False)  # pruned: the server keeps it, naming Kofi
    store = _store(box)
    store.delete_patient(kofi_rec.patient_id, actor="t", reason="consent withdrawn")
    store.add_recording(file="r9.wav", sha256="9" * 64, duration_s=20.0, rate=48000, source="device",
                        device_id="box", verdict="normal")
    store.close()
    refused = _sync(box)
    assert refused.returncode == 1
    assert ("records deleted on this device are not deleted on the server yet (0 of 1 deletions done): the FHIR "
            "server at") in refused.stdout and "HTTP 409: HAPI-0515: Unable to delete Patient/box-patient-" in refused.stdout
    audit = _audit(box["data"])
    assert audit[0].startswith("failed: changes to") and "HTTP 409" in audit[0]
    assert audit[1].endswith(": 1 recordings, 2 resources created, 0 updated, 0 deleted")
    assert "Media/box-media-5" in fhir_server.resources  # the new recording went all the same
    again = _sync(box)
    assert _audit(box["data"]) == audit  # the same failure an hour later: the journal has it, the audit log once
    assert again.returncode == 1 and "HTTP 409" in again.stdout and len(fhir_server.requests) == 4  # only the deletion again
    assert fhir_server.requests[-1]["bundle"]["entry"] == [{"request": {"method": "DELETE", "url": f"Patient/box-patient-{kofi_rec.patient_id}"}}]
    del fhir_server.resources[f"Media/box-media-{kofi_rec.id}"], fhir_server.resources[f"Observation/box-observation-{kofi_rec.id}"]
    done = _sync(box)  # the technician deleted on the server what named the patient
    assert done.returncode == 0 and "1 resource(s) deleted there" in done.stdout
    assert f"Patient/box-patient-{kofi_rec.patient_id}" not in fhir_server.resources


def test_a_finding_cleared_leaves_the_server_unless_given_again_before_the_send(box, fhir_server):
    store = _store(box)
    store.set_finding(3, "abnormal", actor="t")
    store.close()
    assert _sync(box).returncode == 0 and "Observation/box-finding-3" in fhir_server.resources
    store = _store(box)
    store.set_finding(3, None, actor="t")
    store.close()
    assert "1 resource(s) deleted there" in _sync(box).stdout and "Observation/box-finding-3" not in fhir_server.resources
    store = _store(box)
    store.set_finding(3, "normal", actor="t")
    assert _sync(box).returncode == 0
    store.set_finding(3, None, actor="t")
    store.set_finding(3, "abnormal", "seen again", actor="t")  # cleared, then given anew before the next send
    store.close()
    result = _sync(box)
    assert "deleted there" not in result.stdout and "seen again" in str(fhir_server.resources["Observation/box-finding-3"])


def test_a_recording_number_given_again_is_not_deleted_on_the_server(box, fhir_server):
    """SQLite gives the newest recording's number to the next one when the newest is deleted:
    the deletion of the old one's resources must not take the new one's."""
    assert _sync(box).returncode == 0
    _delete(box, [4], from_fhir_server=True)
    store = _store(box)
    new = store.add_recording(file="r9.wav", sha256="9" * 64, duration_s=20.0, rate=48000, source="device",
                              device_id="box", verdict="abnormal", captured_at="2026-03-03T09:00:00+00:00")
    store.close()
    assert new == 4
    result = _sync(box)
    assert result.returncode == 0 and "deleted there" not in result.stdout
    assert fhir_server.resources["Media/box-media-4"]["identifier"][0]["value"] == "9" * 64


def test_a_patient_number_given_again_does_not_keep_the_deleted_patient_on_the_server(box, fhir_server):
    """Until the new patient has a recording, the server holds the deleted one under that number:
    the deletion goes. Once the new one has recordings, their send replaces it: the deletion is void."""
    store = _store(box)
    newest = max(p["id"] for p in store.list_patients())
    store.close()
    assert _sync(box).returncode == 0 and f"Patient/box-patient-{newest}" in fhir_server.resources
    store = _store(box)
    store.delete_patient(newest, actor="t", reason="consent withdrawn")
    again = store.add_patient(name="Efua Boateng", actor="t")
    store.close()
    assert again == newest
    result = _sync(box)
    assert "1 resource(s) deleted there" in result.stdout and f"Patient/box-patient-{newest}" not in fhir_server.resources
    store = _store(box)
    store.delete_patient(again, actor="t", reason="duplicate")
    third = store.add_patient(name="Yaw Asante", actor="t")
    store.assign_recording(4, third, actor="t")
    store.close()
    result = _sync(box)
    assert "deleted there" not in result.stdout
    assert "Yaw Asante" in str(fhir_server.resources[f"Patient/box-patient-{third}"])


def test_a_send_asked_for_on_the_web_page_is_taken_away_before_the_send(box, fhir_server, tmp_path):
    """heartpi-fhir-sync.path starts the service while the request exists: the send removes it
    first, whatever comes of the send (here the server refuses the token)."""
    from device.send_request import REQUEST_FILE, request_send

    request_send(box["data"] / "fhir", requested_by="boss@clinic.test")
    result = _sync(box)
    assert result.returncode == 0 and "sending now, as boss@clinic.test asked on the web page" in result.stdout
    assert not (box["data"] / "fhir" / REQUEST_FILE).exists()
    request_send(box["data"] / "fhir", requested_by="boss@clinic.test")
    store = _store(box)
    store.set_finding(1, "normal", actor="t")  # something to send
    store.close()
    (Path(box["env"]["CREDENTIALS_DIRECTORY"]) / TOKEN_CREDENTIAL).write_text("wrong")
    assert _sync(box).returncode == 1 and not (box["data"] / "fhir" / REQUEST_FILE).exists()
    request_send(box["data"] / "fhir", requested_by="boss@clinic.test")
    _config(tmp_path, box["data"], "")
    assert _sync(box).returncode == 0 and not (box["data"] / "fhir" / REQUEST_FILE).exists()


def test_a_token_file_that_cannot_be_read_is_named_and_audited_like_a_refusal(box, fhir_server, tmp_path):
    result = _sync(box, "--token-file", str(tmp_path / "missing"))
    assert result.returncode == 1 and f"the token file {tmp_path / 'missing'} does not exist" in result.stdout
    assert _audit(box["data"])[0].startswith(f"failed: changes to {fhir_server.url.split('/')[2]}: the token file")
    assert not fhir_server.requests
