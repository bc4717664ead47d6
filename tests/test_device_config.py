"""Typed configuration: defaults, env vars, files, and one clear message per mistake."""

from __future__ import annotations

import pytest

from device.config import config_from_mapping, load_config
from device.errors import ConfigError


def test_defaults_with_only_data_dir_env(tmp_path):
    config = load_config(env={"HEARTPI_DATA_DIR": str(tmp_path)})
    assert config.data_dir == tmp_path
    assert config.database_path == tmp_path / "heartpi.sqlite3"
    assert config.audio.record_seconds == 20.0
    assert config.device_id  # hostname by default
    assert config.model_file is None  # bundled model


def test_file_from_env_and_explicit_path(tmp_path):
    path = tmp_path / "heartpi.toml"
    path.write_text('[device]\nid = "box-7"\n[audio]\ncard = "USB"\nsample_rate = 44100\n'
                    f'[storage]\ndata_dir = "{tmp_path}/d"\n')
    for config in (load_config(env={"HEARTPI_CONFIG": str(path)}), load_config(path, env={})):
        assert config.device_id == "box-7" and config.audio.card == "USB"
        assert config.audio.sample_rate == 44100 and config.source == path


@pytest.mark.parametrize("toml,message", [
    ("[audio]\nsample_rate = 'fast'\n", "audio.sample_rate must be a number"),
    ("[audio]\nsample_rate = 100\n", "audio.sample_rate must be between 8000 and 192000"),
    ("[audio]\nrecord_secs = 20\n", "unknown key audio.record_secs; allowed keys in [audio]: card, sample_rate"),
    ("[sound]\ncard = 1\n", "unknown section [sound]"),
    ("[gpio]\nbutton = 40\n", "gpio.button must be between 0 and 27"),
    ("[gpio]\nbutton = 27\n", "gpio pins must all differ"),
    ("[audio]\ncard = true\n", "audio.card must be a card name"),
    ("[web]\nport = 1.5\n", "web.port must be a number (whole)"),
    ("[audio]\nsite = 'apex'\n", "audio.site must be one of '', aortic, pulmonic, tricuspid, mitral, got 'apex'"),
    ("audio = 3\n", "[audio] must be a section"),
    ("[fhir]\nserver_url = 'fhir.region.example'\n", "fhir.server_url must be the server's base address, starting https://"),
    ("[fhir]\nserver_url = 'https://'\n", "fhir.server_url must be the server's base address"),
    ("[fhir]\nbatch = 0\n", "fhir.batch must be between 1 and 100"),
    ("[fhir]\ninclude_audio = 'yes'\n", "fhir.include_audio must be true or false, got 'yes'"),
    ("[audio\n", "is not valid TOML"),
])
def test_invalid_config_names_the_key(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert message in str(info.value)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_describe_masks_secrets(tmp_path):
    config = config_from_mapping({"web": {"secret_key_file": "/etc/heartpi/secret"}}, env={})
    text = config.describe()
    assert "web.secret_key_file = ********" in text and "/etc/heartpi/secret" not in text


def test_daemon_refuses_to_start_on_invalid_config(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.toml"
    path.write_text("[audio]\nsample_rate = 12\n")
    result = subprocess.run([sys.executable, "-m", "heartpi.cli", "--config", str(path), "daemon",
                             "--simulate", "--presses", "1"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "audio.sample_rate must be between 8000 and 192000" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_fhir_server_is_one_address_with_or_without_a_trailing_slash():
    """The hourly send keeps what a server was sent under its address: 'https://h/fhir/' and
    'https://h/fhir' must not be two servers (every record sent again)."""
    from device.config import config_from_mapping

    for url in ("https://fhir.region.example/fhir/", "https://fhir.region.example/fhir"):
        assert config_from_mapping({"fhir": {"server_url": url}}, env={}).fhir.server_url == \
            "https://fhir.region.example/fhir"
    assert config_from_mapping({}, env={}).fhir.server_url == ""
