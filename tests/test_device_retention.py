"""Deleting recordings: files, records and pictures go together, each deletion audited; a
failure part-way loses nothing and a crash part-way never brings a deleted recording back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.errors import StorageError
from device.retention import DELETED_SUFFIX, delete_recordings, remove_leftovers
from device.storage import store_recording
from tests.conftest import reference_wavs

ROOT = Path(__file__).resolve().parents[1]


def _record(config, store, wav: Path, **kwargs) -> int:
    relative, sha = store_recording(config.recordings_dir, wav.read_bytes())
    return store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                               device_id="box", verdict=kwargs.pop("verdict", "normal"), **kwargs)


def _cache(config) -> Path:
    return config.data_dir / "cache"


def test_delete_removes_record_file_and_pictures_and_audits_why(heartpi_config, store):
    wav = reference_wavs()[0]
    keep = _record(heartpi_config, store, reference_wavs()[1])
    gone = _record(heartpi_config, store, wav, patient_id=None)
    rec = store.get_recording(gone)
    path = heartpi_config.recordings_dir / rec.file
    _cache(heartpi_config).mkdir(parents=True)
    picture = _cache(heartpi_config) / f"{rec.sha256}-pcg.svg"
    picture.write_text("<svg/>")
    size = path.stat().st_size

    deleted = delete_recordings(store, heartpi_config.recordings_dir, _cache(heartpi_config), [rec],
                                actor="user:1:boss@clinic.test", reason="  test   recording ",
                                from_fhir_server=True)
    assert (deleted.recordings, deleted.bytes_freed) == (1, size)
    assert store.get_recording(gone) is None and store.get_recording(keep) is not None
    assert not path.exists() and not path.with_name(path.name + DELETED_SUFFIX).exists()
    assert not picture.exists()
    (entry,) = [e for e in store.audit_entries() if e["action"] == "recording.delete"]
    assert entry["target"] == f"recording:{gone}" and entry["actor"] == "user:1:boss@clinic.test"
    assert entry["detail"].endswith(f"file {rec.file}: test recording")
    assert "verdict normal" in entry["detail"] and rec.sha256[:16] in entry["detail"]


def test_pictures_stay_while_another_recording_has_the_same_audio(heartpi_config, store):
    wav = reference_wavs()[0]
    first, second = _record(heartpi_config, store, wav), _record(heartpi_config, store, wav)
    rec = store.get_recording(first)
    _cache(heartpi_config).mkdir(parents=True)
    picture = _cache(heartpi_config) / f"{rec.sha256}-spectrogram.png"
    picture.write_bytes(b"png")
    delete_recordings(store, heartpi_config.recordings_dir, _cache(heartpi_config), [rec], actor="a",
                      reason="uploaded twice", from_fhir_server=True)
    assert picture.exists() and store.get_recording(second) is not None


def test_a_reason_is_required(heartpi_config, store):
    rec = store.get_recording(_record(heartpi_config, store, reference_wavs()[0]))
    with pytest.raises(StorageError, match="say why"):
        delete_recordings(store, heartpi_config.recordings_dir, _cache(heartpi_config), [rec], actor="a", reason=" x ",
                          from_fhir_server=True)
    assert store.get_recording(rec.id) is not None and (heartpi_config.recordings_dir / rec.file).exists()


def test_failed_database_step_puts_the_files_back(heartpi_config, store):
    ids = [_record(heartpi_config, store, w) for w in reference_wavs()[:2]]
    recs = [store.get_recording(i) for i in ids]
    store.delete_recordings([ids[1]], actor="someone else", reason="deleted meanwhile", from_fhir_server=True)  # the 2nd vanishes
    with pytest.raises(StorageError, match=f"recording {ids[1]} does not exist"):
        delete_recordings(store, heartpi_config.recordings_dir, _cache(heartpi_config), recs, actor="a",
                          reason="both", from_fhir_server=True)
    assert store.get_recording(ids[0]) is not None
    assert (heartpi_config.recordings_dir / recs[0].file).exists()  # renamed back: nothing lost
    assert not list(heartpi_config.recordings_dir.rglob(f"*{DELETED_SUFFIX}"))


def test_crash_after_the_records_went_never_brings_a_recording_back(heartpi_config, store, classifier):
    """A ``.deleted`` file left by a kill is removed at the daemon's start, not re-analysed
    as a recording without a record."""
    from device.runner import build_daemon

    rec = store.get_recording(_record(heartpi_config, store, reference_wavs()[0]))
    path = heartpi_config.recordings_dir / rec.file
    path.rename(path.with_name(path.name + DELETED_SUFFIX))  # step 1 done ...
    store.delete_recordings([rec.id], actor="a", reason="killed before the files went", from_fhir_server=True)  # ... step 2 done
    daemon = build_daemon(heartpi_config, simulate=True, classifier=classifier)
    try:
        assert daemon.recover() == 0
    finally:
        daemon.store.close()
        daemon.indicator.close()
    assert store.count_recordings() == 0
    assert not list(heartpi_config.recordings_dir.rglob("*.wav*"))
    assert remove_leftovers(heartpi_config.recordings_dir, store) == (0, 0)


def test_crash_before_the_records_went_keeps_the_recording(heartpi_config, store):
    """Killed between renaming the file and deleting the record: the deletion never happened,
    so the file is put back, not removed from under its record."""
    rec = store.get_recording(_record(heartpi_config, store, reference_wavs()[0]))
    path = heartpi_config.recordings_dir / rec.file
    path.rename(path.with_name(path.name + DELETED_SUFFIX))
    assert remove_leftovers(heartpi_config.recordings_dir, store) == (0, 1)
    assert path.exists() and store.get_recording(rec.id) is not None


def _heartpi(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HEARTPI_CONFIG=str(config_path))
    return subprocess.run([sys.executable, "-m", "heartpi.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_prune_frees_space_only_when_told_to(heartpi_config, store, tmp_path):
    old = [_record(heartpi_config, store, w, captured_at=f"2026-0{i + 1}-15T09:00:00+00:00",
                   verdict=("poor_signal", "normal")[i % 2]) for i, w in enumerate(reference_wavs()[:3])]
    new = _record(heartpi_config, store, reference_wavs()[3], captured_at="2026-11-20T09:00:00+00:00")
    config_path = tmp_path / "heartpi.toml"
    config_path.write_text(f'[storage]\ndata_dir = "{heartpi_config.data_dir}"\n')
    sizes = {i: (heartpi_config.recordings_dir / store.get_recording(i).file).stat().st_size for i in old}

    dry = _heartpi(config_path, "prune", "--before", "2026-03-01")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete 2 recording(s) made before 2026-03-01 ({(sizes[old[0]] + sizes[old[1]]) / 1e6:.1f} MB)" in dry.stdout
    assert store.count_recordings() == 4

    only_poor = _heartpi(config_path, "prune", "--before", "2026-11-01", "--verdict", "poor_signal", "--yes")
    assert only_poor.returncode == 0, only_poor.stderr
    assert "PASS  prune: deleted 2 poor_signal recording(s) made before 2026-11-01" in only_poor.stdout
    assert {r.id for r in store.list_recordings()} == {old[1], new}

    everything_old = _heartpi(config_path, "prune", "--before", "2026-11-01", "--yes", "--reason", "card full")
    assert "deleted 1 recording(s)" in everything_old.stdout
    assert {r.id for r in store.list_recordings()} == {new}
    assert [e["detail"].rsplit(": ", 1)[1] for e in store.audit_entries() if e["action"] == "recording.delete"
            ].count("card full (kept on the FHIR server)") == 1
    assert store.fhir_deletions("https://fhir.region.example/fhir") == []  # pruned: the server keeps them

    bad = _heartpi(config_path, "prune", "--before", "last year")
    assert bad.returncode == 1 and "is not a date: use YYYY-MM-DD" in bad.stdout


def test_prune_keeps_what_the_fhir_server_does_not_have_yet(heartpi_config, store, tmp_path):
    """With fhir.server_url set, the server is where pruned records live on: a recording made or
    changed since the last send that went through is not pruned unless the technician says so."""
    old = [_record(heartpi_config, store, w, captured_at=f"2026-01-0{i + 1}T09:00:00+00:00")
           for i, w in enumerate(reference_wavs()[:2])]
    config_path = tmp_path / "heartpi.toml"
    config_path.write_text(f'[storage]\ndata_dir = "{heartpi_config.data_dir}"\n'
                           '[fhir]\nserver_url = "https://fhir.region.example/fhir"\n')
    store.mark_fhir_sent("https://fhir.region.example/fhir", store.get_recording(old[0]).changed_seq)
    refused = _heartpi(config_path, "prune", "--before", "2026-03-01", "--yes")
    assert refused.returncode == 1 and store.count_recordings() == 2
    assert ("FAIL  prune: 1 of the 2 recording(s) made before 2026-03-01 have not reached the FHIR server as they "
            "are now: run 'sudo heartpi fhir-sync' first") in refused.stdout
    store.mark_fhir_sent("https://fhir.region.example/fhir", store.get_recording(old[1]).changed_seq)
    assert _heartpi(config_path, "prune", "--before", "2026-03-01", "--yes").returncode == 0
    assert store.count_recordings() == 0
    again = _record(heartpi_config, store, reference_wavs()[2], captured_at="2026-01-05T09:00:00+00:00")
    forced = _heartpi(config_path, "prune", "--before", "2026-03-01", "--yes", "--unsent-too")
    assert forced.returncode == 0 and store.get_recording(again) is None
