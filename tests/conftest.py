"""Shared fixtures: real files, real SQLite, real PyAudio through an ALSA file device,
gpiozero MockFactory pins, and the Flask app with client/auth helpers (flaskr style)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

import dsp
from tests.signals import heart_sounds

ALSA_RATE = 48000
ASOUNDRC = """
pcm.stetho_raw {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.stetho {{
    type plug
    slave {{ pcm "stetho_raw"; format S16_LE; rate {rate}; channels 1 }}
    hint {{ show on; description "Test stethoscope (file)" }}
}}
"""


@pytest.fixture(scope="session")
def alsa_device(tmp_path_factory):
    """An ALSA 'file' PCM named 'stetho' whose input is 30 s of synthetic heart sounds.

    HOME points at a folder with the .asoundrc for the whole session (ALSA reads it when
    PortAudio initialises). Yields the float samples that were written.
    """
    home = tmp_path_factory.mktemp("alsa-home")
    signal = dsp.resample(heart_sounds(72, 30.0, 2000, seed=3), 2000, ALSA_RATE)
    pcm = np.round(np.clip(signal, -1, 1) * 32767).astype("<i2")
    infile = home / "in.raw"
    infile.write_bytes(pcm.tobytes())
    (home / ".asoundrc").write_text(ASOUNDRC.format(infile=infile, rate=ALSA_RATE))
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    yield pcm.astype(np.float32) / 32768.0
    if old is not None:
        os.environ["HOME"] = old


@pytest.fixture
def mock_factory():
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    previous = Device.pin_factory
    Device.pin_factory = factory
    yield factory
    factory.reset()
    Device.pin_factory = previous


@pytest.fixture
def heartpi_config(tmp_path):
    from device.config import config_from_mapping

    return config_from_mapping({"device": {"id": "test-box", "result_hold_seconds": 5},
                                "storage": {"data_dir": str(tmp_path / "data")}}, env={})


@pytest.fixture
def store(heartpi_config):
    from device.records import RecordStore

    s = RecordStore(heartpi_config.database_path)
    yield s
    s.close()


@pytest.fixture(scope="session")
def classifier():
    from model import Classifier

    return Classifier.load()


# -- web -----------------------------------------------------------------------------------------
PASSWORD = "correct horse battery"


class AuthActions:
    """Log in as a given role (accounts are created on first use)."""

    def __init__(self, client, store) -> None:
        self._client = client
        self._store = store

    def ensure_user(self, role: str, email: str | None = None, password: str = PASSWORD) -> dict:
        from webui.passwords import hash_password

        email = email or f"{role}@clinic.test"
        if not self._store.user_by_email(email):
            self._store.add_user(email=email, password_hash=hash_password(password), role=role, actor="test")
        return self._store.user_by_email(email)

    def csrf(self, path: str = "/login") -> str:
        html = self._client.get(path).get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def login(self, role: str = "admin", email: str | None = None, password: str = PASSWORD):
        user = self.ensure_user(role, email)
        token = self.csrf("/login")
        return self._client.post("/login", data={"email": user["email"], "password": password,
                                                 "csrf_token": token})

    def logout(self):
        token = self.csrf("/recordings")
        return self._client.post("/logout", data={"csrf_token": token})


@pytest.fixture
def app(heartpi_config):
    from flask.testing import FlaskClient

    from webui import create_app

    class HttpsClient(FlaskClient):
        """The session cookie is Secure, so talk to the app as a browser would over HTTPS."""

        def open(self, *args, **kwargs):
            kwargs.setdefault("base_url", "https://localhost")
            return super().open(*args, **kwargs)

    application = create_app({"TESTING": True, "HEARTPI_CONFIG": heartpi_config})
    application.test_client_class = HttpsClient
    yield application
    application.extensions["heartpi_store"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def web_store(app):
    return app.extensions["heartpi_store"]


@pytest.fixture
def auth(client, web_store):
    return AuthActions(client, web_store)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def reference_wavs() -> list[Path]:
    from model.classifier import ASSETS

    return sorted((ASSETS / "reference").glob("*.wav"))


#: (container, codec, rate) of the compressed recordings phones and apps save, for the decode tests
PHONE_FORMATS = {"m4a": ("ipod", "aac", 44100), "mp3": ("mp3", "libmp3lame", 44100),
                 "ogg": ("ogg", "libopus", 48000), "flac": ("flac", "flac", 44100)}


def encode_compressed(samples, rate: int, container: str, codec: str, *, bit_rate: int = 64000) -> bytes:
    """A compressed recording made by FFmpeg's own encoders through PyAV, as a phone would save it."""
    import io

    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        if codec != "flac":
            stream.bit_rate = bit_rate
        step = stream.codec_context.frame_size or 1024
        pcm = np.asarray(samples, np.float32)
        for start in range(0, pcm.size, step):
            frame = av.AudioFrame.from_ndarray(pcm[None, start:start + step], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def phone_copy(path, kind: str, *, seconds=None) -> bytes:
    """A reference WAV as a phone of ``kind`` (a :data:`PHONE_FORMATS` key) would save it: at the
    phone's rate, compressed; ``seconds`` repeats or cuts it to that length first."""
    import numpy as np

    import dsp

    container, codec, rate = PHONE_FORMATS[kind]
    samples, source_rate = dsp.read_wav(path)
    if seconds is not None:
        samples = np.resize(samples, int(seconds * source_rate))
    return encode_compressed(dsp.resample(samples, source_rate, rate), rate, container, codec)


@pytest.fixture
def fhir_server():
    """A small FHIR server on 127.0.0.1 (tests/test_fhir_send.py's FhirServer): the manual send,
    the hourly send and selftest's check talk to it over a real socket."""
    from tests.test_fhir_send import FhirServer

    server = FhirServer()
    yield server
    server.close()
