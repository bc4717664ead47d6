"""FHIR exports as a central FHIR server would take them: resources valid FHIR (checked by the
fhir.resources models, FHIR R4B, whose Patient, Media, Observation, Encounter and Bundle are R4's),
and the transaction Bundle filing each resource under an id that names the device."""

from __future__ import annotations

import base64
import json
import re

import pytest

from device.records import RecordStore
from webui.exporting import (DEVICE_ID_CHARS, FHIR_ID, device_id_prefix, to_fhir_bundle,
                             to_fhir_transaction)


@pytest.fixture
def store(tmp_path):
    """A patient seen at two places in one visit, a clinician's finding on one of them, and a
    recording nobody was assigned to."""
    store = RecordStore(tmp_path / "records.sqlite3")
    (tmp_path / "recordings").mkdir()
    patient = store.add_patient(name="Ama Owusu", external_id="AO-1", birth_date="2019-04-02", sex="female",
                                actor="t")
    ids = []
    for n, (site, verdict) in enumerate([("aortic", "normal"), ("mitral", "abnormal"), ("aortic", "poor_signal")]):
        (tmp_path / "recordings" / f"r{n}.wav").write_bytes(b"RIFF-not-really-%d" % n)
        ids.append(store.add_recording(file=f"r{n}.wav", sha256=f"{n}" * 64, duration_s=20.0, rate=48000,
                                       source="device", device_id="clinic-3", verdict=verdict,
                                       p_abnormal=0.02 + 0.4 * n, threshold=0.076, heart_rate_bpm=92.0,
                                       model_sha256="ab" * 32, software_version="1.0", site=site,
                                       visit="a1b2c3d4e5f6" if n < 2 else None,
                                       captured_at=f"2026-03-02T09:0{n}:00+00:00"))
    for rec_id in ids[:2]:
        store.assign_recording(rec_id, patient, actor="t")
    store.set_finding(ids[1], "abnormal", "echo: mitral regurgitation", actor="user:2:doc@clinic.test")
    yield store, tmp_path / "recordings"
    store.close()


def _bundles(store, recordings_dir, device_id="clinic-3"):
    recordings = store.list_recordings()
    kwargs = dict(device_id=device_id, recordings_dir=recordings_dir)
    return to_fhir_bundle(store, recordings, **kwargs), to_fhir_transaction(store, recordings, **kwargs)


def references_in(node) -> list[str]:
    """Every ``reference`` in a resource (or a list of them), however deep."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "reference"] + [r for v in node.values() for r in references_in(v)]
    if isinstance(node, list):
        return [r for item in node for r in references_in(item)]
    return []


def test_both_fhir_exports_are_valid_fhir(store):
    """Every resource of both kinds of export, read by a FHIR library's models: a wrong type,
    a misspelt element or a missing required one fails here, not at the clinic's server."""
    pytest.importorskip("fhir.resources")
    from fhir.resources.R4B.bundle import Bundle

    for bundle in _bundles(*store):
        parsed = Bundle.model_validate(json.loads(json.dumps(bundle)))
        assert parsed.type == bundle["type"] and len(parsed.entry) == len(bundle["entry"]) == 9
    broken = _bundles(*store)[1]
    observation = next(e["resource"] for e in broken["entry"] if e["resource"]["resourceType"] == "Observation")
    del observation["status"]
    with pytest.raises(ValueError, match="status"):  # the check can fail: an Observation without its status
        Bundle.model_validate(broken)


def test_the_deletions_transaction_is_valid_fhir_and_names_the_ids_the_records_were_put_at():
    """heartpi fhir-sync asks the server to delete what staff deleted (device.records, schema 11)
    under the very ids the transaction export PUT it at (the device's prefix)."""
    pytest.importorskip("fhir.resources")
    from fhir.resources.R4B.bundle import Bundle

    from webui.exporting import device_id_prefix, to_fhir_deletions

    bundle = to_fhir_deletions(["Media/media-5", "Patient/patient-2", "Encounter/visit-a1b2c3d4e5f6"],
                               device_id="Clinic 3 / box 1")
    parsed = Bundle.model_validate(bundle)
    prefix = device_id_prefix("Clinic 3 / box 1")
    assert parsed.type == "transaction" and [(e.request.method, e.request.url) for e in parsed.entry] == [
        ("DELETE", f"Media/{prefix}media-5"), ("DELETE", f"Patient/{prefix}patient-2"),
        ("DELETE", f"Encounter/{prefix}visit-a1b2c3d4e5f6")]


def test_every_reference_in_a_collection_resolves_inside_it_by_fhirs_rule(store):
    """A relative reference resolves against the base of its entry's fullUrl (FHIR R4, Bundle,
    "Resolving references in Bundles"); each must land on another entry's fullUrl."""
    collection, _ = _bundles(*store)
    full_urls = [e["fullUrl"] for e in collection["entry"]]
    assert len(set(full_urls)) == len(full_urls) == 9
    resolved = 0
    for entry in collection["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"https://heartpi.invalid/devices/clinic-3/fhir/{resource['resourceType']}/{resource['id']}"
        base = entry["fullUrl"].rsplit("/", 2)[0]
        for reference in references_in(resource):
            assert f"{base}/{reference}" in full_urls, (entry["fullUrl"], reference)
            resolved += 1
    assert resolved >= 10


def test_a_transaction_puts_each_resource_under_an_id_naming_the_device(store):
    collection, transaction = _bundles(*store)
    assert transaction["resourceType"] == "Bundle" and transaction["type"] == "transaction"
    urls = []
    for entry, original in zip(transaction["entry"], collection["entry"]):
        resource = entry["resource"]
        assert resource["id"] == "clinic-3-" + original["resource"]["id"] and FHIR_ID.fullmatch(resource["id"])
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            entry["fullUrl"])
        urls.append(entry["request"]["url"])
        # the same resource otherwise: only ids and the references between them differ
        assert (json.dumps(resource).replace("clinic-3-", "") == json.dumps(original["resource"]))
    assert len(set(urls)) == len(urls) == 9
    assert len({e["fullUrl"] for e in transaction["entry"]}) == 9
    references = references_in([e["resource"] for e in transaction["entry"]])
    assert len(references) >= 10 and set(references) <= set(urls)  # every reference resolves in the bundle
    # a referenced resource is put before whatever refers to it
    position = {url: i for i, url in enumerate(urls)}
    for i, entry in enumerate(transaction["entry"]):
        assert all(position[r] < i for r in references_in(entry["resource"]))
    kinds = sorted(e["resource"]["resourceType"] for e in transaction["entry"])
    assert kinds == ["Encounter", "Media", "Media", "Media", "Observation", "Observation", "Observation",
                     "Observation", "Patient"]  # three verdicts and a clinician's finding


def test_sending_again_updates_the_same_resources_and_another_device_never_overwrites_them(store):
    _, first = _bundles(*store)
    _, again = _bundles(*store)
    assert [e["request"]["url"] for e in first["entry"]] == [e["request"]["url"] for e in again["entry"]]
    assert [e["fullUrl"] for e in first["entry"]] == [e["fullUrl"] for e in again["entry"]]
    _, other = _bundles(*store, device_id="clinic-4")
    assert not {e["request"]["url"] for e in first["entry"]} & {e["request"]["url"] for e in other["entry"]}
    assert not {e["fullUrl"] for e in first["entry"]} & {e["fullUrl"] for e in other["entry"]}


def test_the_transaction_carries_the_audio_unless_left_out(store):
    rec_store, recordings_dir = store
    _, transaction = _bundles(rec_store, recordings_dir)
    media = [e["resource"] for e in transaction["entry"] if e["resource"]["resourceType"] == "Media"]
    assert base64.b64decode(media[0]["content"]["data"]).startswith(b"RIFF-not-really-")
    bare = to_fhir_transaction(rec_store, rec_store.list_recordings(), device_id="clinic-3",
                               recordings_dir=recordings_dir, include_audio=False)
    assert not any("data" in e["resource"].get("content", {}) for e in bare["entry"])


@pytest.mark.parametrize("device_id", ["clinic-3", "HeartPi.ward-2", "a" * DEVICE_ID_CHARS])
def test_a_device_id_fhir_can_carry_is_kept_as_it_is(device_id):
    assert device_id_prefix(device_id) == device_id + "-"


@pytest.mark.parametrize("device_id, other", [
    ("Clinic 3/ward A", "Clinic 3 ward A"),  # cleaned alike, hashed apart
    ("b" * 40 + "1", "b" * 40 + "2"),  # too long, alike in their first characters
    ("héartpi", "h-artpi"),
    ("", "---"),
])
def test_a_device_id_fhir_cannot_carry_is_cleaned_and_still_tells_devices_apart(device_id, other):
    prefix, other_prefix = device_id_prefix(device_id), device_id_prefix(other)
    assert prefix != other_prefix
    for made in (prefix, other_prefix):
        assert FHIR_ID.fullmatch(made) and len(made) <= DEVICE_ID_CHARS + 1
        assert FHIR_ID.fullmatch(made + "observation-" + "9" * 10)


def test_a_visit_exported_in_part_keeps_its_whole_encounter(store):
    """A server files the Encounter by id: an export of some of a visit's recordings (referrals
    only, a range ending mid-visit) must not shrink the visit it already holds."""
    rec_store, recordings_dir = store
    visit = [r for r in rec_store.list_recordings() if r.visit]
    assert len(visit) == 2
    whole = to_fhir_transaction(rec_store, visit, device_id="clinic-3", recordings_dir=recordings_dir)
    part = to_fhir_transaction(rec_store, rec_store.list_recordings(referrals=True), device_id="clinic-3",
                               recordings_dir=recordings_dir)
    encounters = [next(e for e in b["entry"] if e["resource"]["resourceType"] == "Encounter") for b in (whole, part)]
    assert [e["resource"]["period"] for e in encounters] == [
        {"start": "2026-03-02T09:00:00+00:00", "end": "2026-03-02T09:01:00+00:00"}] * 2
    assert encounters[0] == encounters[1] and "subject" in encounters[1]["resource"]
    observations = [e for e in part["entry"] if e["resource"]["id"].startswith("clinic-3-observation-")]
    assert len(observations) == 1  # the export itself still holds only the referral
