"""Listening on the recording page: filter modes as on a digital stethoscope, at a listening level."""

from __future__ import annotations

import pytest

import dsp
from dsp.listening import TARGET_LEVEL, beat_level
from tests.signals import heart_sounds


@pytest.fixture
def faint_recording(web_store, heartpi_config):
    """A 48 kHz device recording whose heartbeats peak near -34 dBFS, as a USB stethoscope's may."""
    from device.storage import store_recording

    samples = 0.04 * heart_sounds(70, 12, 48000, seed=5)
    relative, sha = store_recording(heartpi_config.recordings_dir, dsp.wav_bytes(samples, 48000))
    rec_id = web_store.add_recording(file=relative, sha256=sha, duration_s=12.0, rate=48000, source="device",
                                     device_id="box", verdict="normal", p_abnormal=0.1)
    return rec_id, sha, samples


@pytest.mark.parametrize("mode", list(dsp.LISTENING_MODES))
def test_each_filter_mode_plays_a_louder_8_khz_copy(client, auth, faint_recording, heartpi_config, mode):
    rec_id, sha, samples = faint_recording
    auth.login("health_worker")
    response = client.get(f"/recordings/{rec_id}/listen/{mode}.wav")
    assert response.status_code == 200 and response.mimetype == "audio/wav"
    played, rate = dsp.read_wav(response.data)
    assert rate == dsp.LISTEN_RATE_HZ and played.size == 12 * rate
    assert len(response.data) < 0.2 * 12 * 48000 * 2  # a sixth of the capture's bytes over Wi-Fi
    if mode != "diaphragm":  # the synthetic beats are 60-90 Hz: below the diaphragm's band
        assert beat_level(played, rate) == pytest.approx(TARGET_LEVEL, abs=0.01)
        assert beat_level(played, rate) > 10 * beat_level(samples, 48000)
    assert (heartpi_config.cache_dir / f"{sha}-listen-{mode}.wav").exists()
    partial = client.get(f"/recordings/{rec_id}/listen/{mode}.wav", headers={"Range": "bytes=100-199"})
    assert partial.status_code == 206 and partial.data == response.data[100:200]  # browsers seek with ranges


def test_unknown_modes_and_recordings_are_not_found(client, auth, faint_recording):
    rec_id, _, _ = faint_recording
    auth.login("health_worker")
    assert client.get(f"/recordings/{rec_id}/listen/treble.wav").status_code == 404
    assert client.get(f"/recordings/{rec_id + 1}/listen/heart.wav").status_code == 404


def test_the_page_starts_with_the_heart_band_and_keeps_the_chosen_filter(client, auth, faint_recording):
    rec_id, _, _ = faint_recording
    auth.login("health_worker")
    page = client.get(f"/recordings/{rec_id}").get_data(as_text=True)
    assert f'src="/recordings/{rec_id}/listen/heart.wav"' in page and "Use headphones" in page
    for mode in dsp.LISTENING_MODES.values():
        assert f'data-src="/recordings/{rec_id}/listen/{mode.name}.wav"' in page and mode.label in page
    page = client.get(f"/recordings/{rec_id}?listen=bell").get_data(as_text=True)
    assert f'src="/recordings/{rec_id}/listen/bell.wav"' in page
    assert 'value="bell" checked' in page
    page = client.get(f"/recordings/{rec_id}?listen=recorded").get_data(as_text=True)
    assert f'src="/recordings/{rec_id}/audio.wav"' in page and 'value="recorded" checked' in page
    page = client.get(f"/recordings/{rec_id}?listen=<script>").get_data(as_text=True)
    assert f'src="/recordings/{rec_id}/listen/heart.wav"' in page and "<script>" not in page


def test_deleting_a_recording_removes_its_listening_copies(client, auth, faint_recording, heartpi_config):
    rec_id, sha, _ = faint_recording
    auth.login("admin")
    client.get(f"/recordings/{rec_id}/listen/bell.wav")
    assert (heartpi_config.cache_dir / f"{sha}-listen-bell.wav").exists()
    token = auth.csrf(f"/recordings/{rec_id}")
    response = client.post(f"/recordings/{rec_id}/delete", data={"csrf_token": token, "reason": "test recording",
                                                                  "confirm": "yes"})
    assert response.status_code == 303
    assert not list(heartpi_config.cache_dir.glob(f"{sha}-*"))
