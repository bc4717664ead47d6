"""One person at the box: the protocol's places in turn, and the visit their recordings share
(device.visits), alone and driven by the daemon with real recordings and mock pins."""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
import pytest

import dsp
from device import gpio
from device.capture import FileSource
from device.config import ConfigError, config_from_mapping
from device.daemon import IDLE
from device.runner import press_button
from device.records import POOR_SIGNALS_TO_REFER, UNJUDGED_NOTE
from device.visits import CANNOT_JUDGE, PersonResult, Visit
from tests.conftest import reference_wavs
from tests.test_device_daemon import Harness

FOUR = ("aortic", "pulmonic", "tricuspid", "mitral")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def visit(sites=FOUR, gap=600.0):
    ids = (f"v{n}" for n in itertools.count(1))
    clock = FakeClock()
    return Visit(sites, gap_seconds=gap, clock=clock, new_id=lambda: next(ids)), clock


def test_a_result_moves_on_a_poor_signal_stays_and_the_last_place_ends_the_person():
    v, _ = visit()
    stamps = []
    for label in ("normal", "poor_signal", "abnormal", None, "normal", "normal", "normal"):
        stamps.append(v.stamp())
        v.recorded(label)  # None: the recording failed
    assert stamps == [("aortic", "v1"), ("pulmonic", "v1"), ("pulmonic", "v1"), ("tricuspid", "v1"),
                      ("tricuspid", "v1"), ("mitral", "v1"), ("aortic", "v2")]
    assert v.place_number == 2 and v.id == "v2"


def test_the_last_place_gives_the_persons_result_red_if_any_place_said_refer():
    v, _ = visit()
    results = []
    for label in ("normal", "abnormal", "poor_signal", "normal", "poor_signal", "normal"):
        v.stamp()
        results.append(v.recorded(label))
    assert results[:5] == [None] * 5  # only the last place speaks for the person, a poor signal never
    assert results[5] == PersonResult("abnormal", ("pulmonic",))
    assert results[5].describe() == "the person's result: refer (pulmonic area)"
    for label in ("normal", "normal", "normal"):  # the next person starts clean
        assert v.recorded(label) is None
    v.next_person()  # a long press forgets the half-done person's refer
    v.recorded("abnormal")
    v.next_person()
    person = [v.recorded(label) for label in ("normal", "normal", "normal", "normal")][-1]
    assert person == PersonResult("normal", ()) and person.describe() == "the person's result: normal at every place"
    for sites in ((), ("mitral",)):  # one place or none: the recording's own light is the person's
        single, _ = visit(sites=sites)
        assert single.recorded("abnormal") is None and single.recorded("normal") is None


def test_a_long_press_or_a_pause_starts_the_next_person_at_the_first_place():
    v, clock = visit(gap=600)
    v.stamp(), v.recorded("normal")
    v.next_person()
    assert (v.site, v.id, v.expires_at()) == ("aortic", None, None)
    assert v.stamp() == ("aortic", "v2")
    v.recorded("normal")
    clock.now += 599
    assert not v.expire_if_paused() and v.site == "pulmonic"
    clock.now += 2
    assert v.expire_if_paused() and v.site == "aortic" and v.id is None
    assert v.stamp() == ("aortic", "v3")


def test_without_a_protocol_a_visit_is_one_recording_and_its_repeats():
    v, _ = visit(sites=())
    assert not v.guided and v.site is None and v.describe_next() == "next recording: any place"
    labels = ("poor_signal", "normal", "abnormal", "poor_signal", "poor_signal", "normal")
    stamps = []
    for label in labels:
        stamps.append(v.stamp()[1])
        v.recorded(label)
    assert stamps == ["v1", "v1", "v2", "v3", "v3", "v3"]
    one, _ = visit(sites=("mitral",))
    assert not one.guided and one.stamp() == ("mitral", "v1")


HEART = ("no_heartbeat",)  # a poor signal about the heart sound itself


def test_the_third_poor_signal_in_a_row_at_a_place_ends_the_person_unjudged():
    """Abnormal hearts come out as poor signal (no heartbeat found) more often than normal ones, so a
    person the box keeps refusing is referred, not sent home: the third such poor signal in a row at
    one place ends the person as "cannot judge"; a result, a long press or a pause starts the count
    again, and a poor signal about the stethoscope, the room or the button neither counts nor resets it."""
    v, _ = visit()
    v.recorded("abnormal")  # aortic said refer, then pulmonic keeps failing
    assert [v.recorded("poor_signal", HEART) for _ in range(2)] == [None, None] and v.site == "pulmonic"
    assert v.ends_unjudged("poor_signal", ("model_uncertain",)) and v.ends_unjudged("poor_signal", HEART)
    assert not v.ends_unjudged("normal") and not v.ends_unjudged(None) and not v.ends_unjudged("poor_signal", ())
    for handling in (("silence",), ("too_short",), ("clipping",), ("noisy",), ("no_heartbeat", "clipping")):
        assert not v.ends_unjudged("poor_signal", handling) and v.recorded("poor_signal", handling) is None
    assert v.site == "pulmonic"  # those stayed at the place and left the count at two
    person = v.recorded("poor_signal", ("no_heartbeat", "model_uncertain"))
    assert person == PersonResult(CANNOT_JUDGE, ("aortic",), unjudged_at="pulmonic")
    assert person.describe() == ("the person's result: refer, the box cannot judge them "
                                 "(3 poor signals in a row at pulmonic area)")
    assert (v.site, v.id) == ("aortic", None)  # the next press is the next person
    for steps in ((("poor_signal", HEART), ("poor_signal", HEART), ("normal", ()),  # a result moved on
                   ("poor_signal", HEART), ("poor_signal", HEART)),
                  (("poor_signal", HEART), ("poor_signal", HEART), ("next", ()),  # a long press
                   ("poor_signal", HEART), ("poor_signal", HEART))):
        v.next_person()
        for label, reasons in steps:
            if label == "next":
                v.next_person()
            else:
                assert v.recorded(label, reasons) is None, steps
        assert v.ends_unjudged("poor_signal", HEART)  # two in a row now: the next would end the person
    single, _ = visit(sites=())
    assert [single.recorded("poor_signal", HEART) for _ in range(3)][-1] == PersonResult(CANNOT_JUDGE, (),
                                                                                          unjudged_at="")
    assert single.recorded("poor_signal", HEART) is None  # counting again for the next person
    assert "(3 poor signals in a row)" in PersonResult(CANNOT_JUDGE, (), unjudged_at="").describe()
    # the lights' words, the guide's and the README's table say the same number
    assert f"poor signal {POOR_SIGNALS_TO_REFER} times in a row" in gpio.PATTERNS[gpio.CANNOT_JUDGE].meaning
    assert gpio.CANNOT_JUDGE == CANNOT_JUDGE


def test_unknown_places_are_refused():
    with pytest.raises(ValueError, match="apex"):
        Visit(("apex",))


# -- configuration ---------------------------------------------------------------------------------
def test_the_protocol_comes_from_audio_sites_or_the_one_audio_site():
    assert config_from_mapping({"audio": {"sites": list(FOUR)}}, env={}).protocol == FOUR
    assert config_from_mapping({"audio": {"site": "mitral"}}, env={}).protocol == ("mitral",)
    assert config_from_mapping({}, env={}).protocol == ()
    assert "audio.sites = ('aortic'," in config_from_mapping({"audio": {"sites": list(FOUR)}}, env={}).describe()


@pytest.mark.parametrize("audio,message", [
    ({"sites": ["aortic", "apex"]}, "'apex' is not one of them"),
    ({"sites": ["aortic", "aortic"]}, "each may appear once"),
    ({"sites": "aortic"}, "must be a list of names in quotes"),
    ({"sites": [1, 2]}, "must be a list of names in quotes"),
    ({"site": "mitral", "sites": ["aortic"]}, "not both"),
    ({"visit_gap_minutes": 0}, "between 1 and 240"),
])
def test_a_wrong_protocol_is_refused_with_words_a_technician_can_act_on(audio, message):
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({"audio": audio}, env={})


# -- the daemon ------------------------------------------------------------------------------------
@pytest.fixture
def silent_wav(tmp_path):
    path = tmp_path / "silence.wav"
    path.write_bytes(dsp.wav_bytes(np.zeros(20 * 4000, np.float32), 4000))
    return path


def protocol_harness(heartpi_config, store, classifier, mock_factory, files, sites=FOUR):
    config = dataclasses.replace(heartpi_config, audio=dataclasses.replace(heartpi_config.audio, sites=sites))
    return Harness(config, store, classifier, mock_factory, FileSource(files))


def wait_idle(h, flashes, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (h.daemon.state, h.indicator.state, h.indicator.flashes) == (IDLE, gpio.READY_AT_PLACE, flashes):
            return
        time.sleep(0.02)
    raise AssertionError(f"not ready for place {flashes}: {h.daemon.state}, {h.indicator.state} x{h.indicator.flashes}")


def test_the_box_walks_the_protocols_places_and_marks_one_visit(heartpi_config, store, classifier,
                                                                mock_factory, silent_wav):
    normal, abnormal = reference_wavs()[2], reference_wavs()[0]
    h = protocol_harness(heartpi_config, store, classifier, mock_factory,
                         [normal, silent_wav, abnormal, normal, normal, normal])
    try:
        wait_idle(h, 1)
        first = h.press_and_wait()       # place 1: normal, moves on
        h.press_and_wait()               # place 2: silence, poor signal: stays
        h.press_and_wait()               # place 2 again: abnormal, moves on
        press_button(h.daemon, 0.6)      # long press during the result: the next person
        wait_idle(h, 1)
        fourth = h.press_and_wait()      # the next person's place 1
        h.press_and_wait()               # and place 2
        recs = [store.get_recording(r.recording_id) for r in h.daemon.results]
    finally:
        h.stop()
    assert [(r.site, r.verdict) for r in recs] == [("aortic", "normal"), ("pulmonic", "poor_signal"),
                                                   ("pulmonic", "abnormal"), ("aortic", "normal"),
                                                   ("pulmonic", "normal")]
    visits = [r.visit for r in recs]
    assert visits[0] == visits[1] == visits[2] != visits[3] == visits[4] and all(visits)
    assert first.label == "normal" and fourth.label == "normal"
    assert [r.id for r in store.visit_recordings(visits[0])] == [r.id for r in recs[:3]]


def test_the_last_places_light_is_red_when_an_earlier_place_said_refer(heartpi_config, store, classifier,
                                                                       mock_factory, caplog):
    normal, abnormal = reference_wavs()[2], reference_wavs()[0]
    h = protocol_harness(heartpi_config, store, classifier, mock_factory, [abnormal, normal, normal, normal],
                         sites=("pulmonic", "mitral"))
    try:
        with caplog.at_level("INFO", logger="heartpi.daemon"):
            labels = [h.press_and_wait().label]
            wait_idle(h, 2)
            labels.append(h.press_and_wait().label)  # the last place: normal, but the person is referred
            person_referred = (h.indicator.state, h.led("red"), h.led("green"))
            labels += [h.press_and_wait().label]  # a press during the result: the next person, place 1
            wait_idle(h, 2)
            labels += [h.press_and_wait().label]  # normal at both places
            person_normal = h.indicator.state
        sites = [store.get_recording(r.recording_id).site for r in h.daemon.results]
    finally:
        h.stop()
    assert labels == ["abnormal", "normal", "normal", "normal"]  # each recording keeps its own verdict
    assert sites == ["pulmonic", "mitral", "pulmonic", "mitral"]
    assert person_referred == (gpio.ABNORMAL, True, False)
    assert person_normal == gpio.NORMAL
    assert "the person's result: refer (pulmonic area)" in caplog.text


def test_three_poor_signals_at_a_place_light_amber_and_red_and_note_the_referral(
        heartpi_config, store, classifier, mock_factory, silent_wav, tmp_path, caplog):
    """No heartbeat found three times at one place (a silent recording between them, the cable's
    fault, neither counts nor resets): amber and red, the note, and the next press is the next person."""
    normal = reference_wavs()[2]
    no_beat = tmp_path / "no-beat.wav"  # sound in the heart band without a beat: "no_heartbeat"
    noise = dsp.bandpass(np.random.default_rng(0).standard_normal(20 * 4000), 4000)
    dsp.write_wav(no_beat, (0.1 * noise / np.abs(noise).max()).astype(np.float32), 4000)
    h = protocol_harness(heartpi_config, store, classifier, mock_factory,
                         [no_beat, silent_wav, no_beat, no_beat, normal], sites=("pulmonic", "mitral"))
    try:
        with caplog.at_level("INFO", logger="heartpi.daemon"):
            wait_idle(h, 1)
            shown = []
            for _ in range(4):
                h.press_and_wait()
                shown.append((h.indicator.state, h.led("amber"), h.led("red"), h.led("green")))
            h.press_and_wait()  # a press during the result records the next person, at place 1
        recs = [store.get_recording(r.recording_id) for r in h.daemon.results]
    finally:
        h.stop()
    assert shown == [(gpio.POOR_SIGNAL, True, False, False)] * 3 + [(gpio.CANNOT_JUDGE, True, True, False)]
    assert [list(r.quality_reasons) for r in recs[:4]] == [["no_heartbeat"], ["silence"], ["no_heartbeat"],
                                                           ["no_heartbeat"]]
    assert [(r.site, r.verdict, r.note) for r in recs] == [
        ("pulmonic", "poor_signal", ""), ("pulmonic", "poor_signal", ""), ("pulmonic", "poor_signal", ""),
        ("pulmonic", "poor_signal", UNJUDGED_NOTE), ("pulmonic", "normal", "")]
    assert recs[0].visit == recs[3].visit != recs[4].visit
    assert "the box cannot judge them (3 poor signals in a row at pulmonic area)" in caplog.text


def test_a_pause_ends_the_person_while_the_box_waits(heartpi_config, store, classifier, mock_factory):
    config = dataclasses.replace(heartpi_config, device=dataclasses.replace(heartpi_config.device,
                                                                            result_hold_seconds=0.3))
    h = Harness(dataclasses.replace(config, audio=dataclasses.replace(config.audio, sites=FOUR)),
                store, classifier, mock_factory, FileSource(reference_wavs()[2:3]))
    try:
        h.daemon.visit.gap_seconds = 2.0
        h.press_and_wait()
        wait_idle(h, 2, timeout=1.5)  # the result has gone: place 2 of the same person
        assert h.daemon.visit.id is not None
        wait_idle(h, 1, timeout=5)    # two seconds after the recording: a new person, place 1
        assert h.daemon.visit.id is None
    finally:
        h.stop()


def test_a_one_place_protocol_shows_the_plain_ready_light(heartpi_config, store, classifier, mock_factory):
    h = protocol_harness(heartpi_config, store, classifier, mock_factory, reference_wavs()[2:3], sites=("mitral",))
    try:
        assert h.indicator.state == gpio.READY
        rec = store.get_recording(h.press_and_wait().recording_id)
        assert rec.site == "mitral" and rec.visit
    finally:
        h.stop()


# -- the records --------------------------------------------------------------------------------
_numbers = itertools.count(1)


def _record(store, visit=None, verdict="normal", patient_id=None, site=None):
    n = next(_numbers)
    return store.add_recording(file=f"v-{n}.wav", sha256="0" * 64, duration_s=20.0, rate=48000,
                               source="device", device_id="box", verdict=verdict, patient_id=patient_id,
                               visit=visit, site=site, captured_at=f"2026-03-02T09:{n % 60:02d}:00+00:00")


def test_migration_to_version_8_keeps_recordings_outside_any_visit(tmp_path):
    from tests.test_device_records import _migrated_recording

    store, rec = _migrated_recording(tmp_path / "v7.sqlite3", 7, verdict="normal", site="mitral")
    assert (rec.file, rec.site, rec.visit) == ("a.wav", "mitral", None)
    assert store.visit_recordings(None) == [] and store.visit_sizes([None]) == {}
    plan = " ".join(r[3] for r in store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM recordings WHERE visit = ? ORDER BY captured_at, id", ("v",)))
    assert "USING INDEX recordings_visit" in plan, plan
    store.close()


def test_assigning_one_recording_of_a_visit_assigns_the_person_once(store):
    amina, kofi = (store.add_patient(name=name, actor="t") for name in ("Amina", "Kofi"))
    places = [_record(store, "v1", site=s) for s in FOUR]
    elsewhere = _record(store, "v1", patient_id=kofi)  # staff had given this one to someone else
    other_visit = _record(store, "v2")
    assert store.visit_sizes(["v1", "v2", None, "v9"]) == {"v1": 5, "v2": 1}
    assert store.visit_sizes(["v1"], unassigned=True) == {"v1": 4}
    changed = store.assign_recording(places[2], amina, actor="user:1:a@c", whole_visit=True)
    assert changed == [places[2], places[0], places[1], places[3]]
    assert [store.get_recording(r).patient_id for r in places] == [amina] * 4
    assert store.get_recording(elsewhere).patient_id == kofi  # stays theirs
    assert store.get_recording(other_visit).patient_id is None
    details = {e["target"]: e["detail"] for e in store.audit_entries(action="recording.assign")}
    assert details[f"recording:{places[0]}"] == f"patient:{amina} with recording:{places[2]}'s visit"
    assert details[f"recording:{places[2]}"] == f"patient:{amina}"
    # one recording alone (the default), e.g. a place recorded on the wrong person
    assert store.assign_recording(places[3], None, actor="t") == [places[3]]
    assert store.get_recording(places[3]).patient_id is None
    assert store.get_recording(places[0]).patient_id == amina


def test_field_results_count_an_unassigned_visit_as_one_person(store):
    """Four places of one visit, nobody assigned: one person, referred if any place said so; a
    recording outside any visit is still its own person."""
    for verdict in ("normal", "abnormal", "poor_signal", "normal"):
        last = _record(store, "v1", verdict=verdict)
    store.set_finding(last, "abnormal", actor="user:2:doc@clinic.test")
    for verdict in ("poor_signal", "normal"):
        last = _record(store, "v2", verdict=verdict)
    store.set_finding(last, "normal", actor="user:2:doc@clinic.test")
    for _ in range(2):
        store.set_finding(_record(store, None, verdict="abnormal"), "normal", actor="user:2:doc@clinic.test")
    assert store.findings_by_verdict() == {("abnormal", "abnormal"): 1, ("normal", "normal"): 1,
                                           ("abnormal", "normal"): 2}


@pytest.mark.parametrize("sites,expected", [(("mitral",), "mitral"), (FOUR, None)])
def test_a_recording_recovered_after_a_crash_has_a_place_only_when_there_is_one(
        heartpi_config, store, classifier, mock_factory, sites, expected):
    """Which of several places an interrupted cycle was at is not known afterwards: none, not a guess."""
    base = heartpi_config.recordings_dir / "2026" / "01"
    base.mkdir(parents=True)
    (base / "rec-orphan.wav").write_bytes(reference_wavs()[0].read_bytes())
    h = protocol_harness(heartpi_config, store, classifier, mock_factory, reference_wavs(), sites=sites)
    try:
        rec = store.recording_by_file("2026/01/rec-orphan.wav")
        assert rec.note.startswith("recovered") and (rec.site, rec.visit) == (expected, None)
    finally:
        h.stop()


def test_provisioning_writes_the_protocol_and_refuses_an_unknown_place(tmp_path):
    import tomllib

    from tests.test_tools import run_cli

    done = run_cli("provision", "--root", str(tmp_path / "a"), "--sites", "aortic, pulmonic,tricuspid,mitral")
    assert done.returncode == 0, done.stdout + done.stderr
    written = tomllib.loads((tmp_path / "a/etc/heartpi/heartpi.toml").read_text())
    assert config_from_mapping(written, env={}).protocol == FOUR
    plain = run_cli("provision", "--root", str(tmp_path / "p"))
    assert plain.returncode == 0 and config_from_mapping(
        tomllib.loads((tmp_path / "p/etc/heartpi/heartpi.toml").read_text()), env={}).protocol == ()
    refused = run_cli("provision", "--root", str(tmp_path / "b"), "--sites", "aortic,apex")
    assert refused.returncode != 0 and "'apex' is not one of them" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "b/etc/heartpi/heartpi.toml").exists()
