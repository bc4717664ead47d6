"""Typed configuration: ``/etc/heartpi/heartpi.toml``, one place for every setting.

Found via ``--config``, else ``$HEARTPI_CONFIG``, else ``/etc/heartpi/heartpi.toml`` when it
exists; with no file at all every default applies, and ``$HEARTPI_DATA_DIR`` alone decides
where data goes. Unknown keys and bad values are refused with one message naming the key
and the allowed values, so a typo never silently falls back to a default.

Example::

    [device]
    id = "clinic-3-box-1"
    timezone = "Africa/Nairobi"
    [audio]
    card = "USB"          # name substring, or an index
    sample_rate = 48000
    record_seconds = 20
    [gpio]
    button = 17
    led_green = 27
    [fhir]
    server_url = "https://fhir.region.example/fhir"
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union
from urllib.parse import urlsplit

from .clinic_time import ClinicTime
from .errors import ConfigError
from .sites import SITES

DEFAULT_CONFIG_PATH = Path("/etc/heartpi/heartpi.toml")
DEFAULT_DATA_DIR = Path("/var/lib/heartpi")


def _spec(default: Any, *, help: str, choices: Optional[tuple] = None,
          minimum: Optional[float] = None, maximum: Optional[float] = None, secret: bool = False):
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum,
                                            "maximum": maximum, "secret": secret})


@dataclass(frozen=True)
class DeviceSection:
    id: str = _spec("", help="device id shown on records and exports (default: hostname)")
    result_hold_seconds: float = _spec(30.0, help="how long the result LED stays on",
                                       minimum=1, maximum=3600)
    model_path: str = _spec("", help="model .tflite to use (default: the bundled model)")
    timezone: str = _spec("UTC", help="the clinic's time zone, an IANA name such as Africa/Nairobi "
                          "('timedatectl list-timezones'): the web page shows times in it, and its days "
                          "(list filters, exports, prune, field results) start at its midnight; records "
                          "stay in UTC")
    referral_alarm_share: float = _spec(0.5, help="the Device page warns when clearly more than this share of "
                                        "the people screened on the device are referred: a stethoscope the "
                                        "model was not trained on can make it call most healthy hearts "
                                        "abnormal (a cardiology clinic that sees mostly sick hearts can raise "
                                        "it; 1 never warns)", minimum=0.05, maximum=1.0)


@dataclass(frozen=True)
class AudioSection:
    card: Union[str, int] = _spec("", help="sound card: name substring or index ('' = default input)")
    sample_rate: int = _spec(48000, help="preferred capture rate in Hz", minimum=8000, maximum=192000)
    record_seconds: float = _spec(20.0, help="recording length in seconds", minimum=5, maximum=120)
    min_seconds: float = _spec(5.0, help="a recording stopped early before this is 'too short: record "
                               "again' (uploads need 1 s)", minimum=1, maximum=120)
    site: str = _spec("", help="where on the chest the clinic's protocol places the stethoscope, stamped on "
                      "every recording and named in the guide ('' = not recorded)", choices=("", *SITES))
    sites: tuple = _spec((), help="a protocol of several places, in the order they are recorded (one press "
                         "each; the ready light flashes the place's number), e.g. [\"aortic\", \"pulmonic\", "
                         "\"tricuspid\", \"mitral\"]; instead of audio.site", choices=tuple(SITES))
    visit_gap_minutes: float = _spec(10.0, help="after this long without a recording the next press starts a "
                                     "new person (at the first place)", minimum=1, maximum=240)
    frames_per_buffer: int = _spec(1024, help="frames per PyAudio buffer", minimum=64, maximum=16384)


@dataclass(frozen=True)
class GpioSection:
    button: int = _spec(17, help="BCM pin of the button (to ground)", minimum=0, maximum=27)
    led_green: int = _spec(27, help="BCM pin of the green LED", minimum=0, maximum=27)
    led_red: int = _spec(22, help="BCM pin of the red LED", minimum=0, maximum=27)
    led_amber: int = _spec(23, help="BCM pin of the amber LED", minimum=0, maximum=27)
    long_press_seconds: float = _spec(2.0, help="hold this long to cancel a recording, or to clear a result "
                                      "and start the next person", minimum=0.5, maximum=10)


@dataclass(frozen=True)
class StorageSection:
    data_dir: str = _spec("", help="where recordings and the database live "
                          "(default: $HEARTPI_DATA_DIR or /var/lib/heartpi)")
    database: str = _spec("", help="SQLite database path (default: DATA_DIR/heartpi.sqlite3)")
    min_free_mb: int = _spec(100, help="refuse to record below this much free disk", minimum=1,
                             maximum=100000)


@dataclass(frozen=True)
class WebSection:
    host: str = _spec("0.0.0.0", help="address the web page listens on")
    port: int = _spec(8443, help="TCP port of the web page", minimum=1, maximum=65535)
    tls_cert: str = _spec("", help="TLS certificate (PEM); empty = plain HTTP")
    tls_key: str = _spec("", help="TLS private key (PEM)")
    secret_key_file: str = _spec("", help="file holding the session signing key "
                                 "(default: DATA_DIR/secret_key)", secret=True)
    session_hours: float = _spec(12.0, help="log out after this many hours", minimum=0.1, maximum=720)
    max_upload_mb: int = _spec(64, help="largest upload accepted", minimum=1, maximum=512)


@dataclass(frozen=True)
class FhirSection:
    server_url: str = _spec("", help="the region's FHIR R4 server's base address (HAPI FHIR: https://host/fhir): "
                            "heartpi-fhir-sync.timer sends it what changed every hour ('' = never)")
    ca_file: str = _spec("", help="the certificate authority of a server whose certificate is its own "
                         "('' = the system's)")
    batch: int = _spec(5, help="recordings per transaction (a visit's recordings go together)",
                       minimum=1, maximum=100)
    include_audio: bool = _spec(True, help="send each recording's audio with it (about 2.6 MB a 48 kHz "
                                "recording); false sends the verdicts and records only")

    @property
    def ca_path(self) -> Optional[Path]:
        """``ca_file`` as a path; None: the system's certificate authorities."""
        return Path(self.ca_file) if self.ca_file else None


SECTIONS = {"device": DeviceSection, "audio": AudioSection, "gpio": GpioSection,
            "storage": StorageSection, "web": WebSection, "fhir": FhirSection}


@dataclass(frozen=True)
class Config:
    device: DeviceSection = field(default_factory=DeviceSection)
    audio: AudioSection = field(default_factory=AudioSection)
    gpio: GpioSection = field(default_factory=GpioSection)
    storage: StorageSection = field(default_factory=StorageSection)
    web: WebSection = field(default_factory=WebSection)
    fhir: FhirSection = field(default_factory=FhirSection)
    source: Optional[Path] = None

    @property
    def device_id(self) -> str:
        return self.device.id or socket.gethostname()

    @property
    def protocol(self) -> tuple[str, ...]:
        """The places the box records one person at, in order (``audio.sites``, else ``audio.site``
        alone); empty: the clinic names none (:mod:`device.visits`)."""
        return self.audio.sites or ((self.audio.site,) if self.audio.site else ())

    @property
    def only_site(self) -> Optional[str]:
        """The place of every recording when the protocol names exactly one (else None: which of
        several is not known for an upload or a recording recovered after a crash)."""
        return self.protocol[0] if len(self.protocol) == 1 else None

    @property
    def clinic_time(self) -> ClinicTime:
        """Times shown, and days cut, in ``device.timezone`` (checked when the file was read)."""
        return ClinicTime(self.device.timezone)

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)

    @property
    def database_path(self) -> Path:
        return Path(self.storage.database) if self.storage.database else self.data_dir / "heartpi.sqlite3"

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        """Pictures and playable copies computed from recordings, named by their sha256."""
        return self.data_dir / "cache"

    @property
    def clock_dir(self) -> Path:
        """Clock changes sent from the web page, applied by ``heartpi-clock.service``
        (:mod:`device.clock`)."""
        return self.data_dir / "clock"

    @property
    def send_request_dir(self) -> Path:
        """An administrator's "send to the FHIR server now", read by ``heartpi-fhir-sync.path``
        (:mod:`device.send_request`)."""
        return self.data_dir / "fhir"

    @property
    def model_file(self) -> Optional[Path]:
        """The model to load: the configured one, else one installed with ``heartpi model
        install`` (``DATA_DIR/models/current``), else None for the bundled model."""
        if self.device.model_path:
            return Path(self.device.model_path)
        installed = self.models_dir / "current" / "heartpi-cnn.tflite"
        return installed if installed.exists() else None

    @property
    def calibration_file(self) -> Path:
        """Per-device threshold written by ``heartpi model calibrate`` (used when present)."""
        return self.models_dir / "calibration.json"

    @property
    def secret_key_path(self) -> Path:
        return Path(self.web.secret_key_file) if self.web.secret_key_file else self.data_dir / "secret_key"

    def describe(self) -> str:
        """One line per setting for the log, secrets masked (Mopidy's habit)."""
        lines = [f"config file: {self.source or '(none, defaults)'}"]
        for name in SECTIONS:
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                shown = "********" if f.metadata["secret"] and value else repr(value)
                lines.append(f"  {name}.{f.name} = {shown}")
        return "\n".join(lines)


def _coerce(section: str, f: dataclasses.Field, value: Any) -> Any:
    key = f"{section}.{f.name}"
    meta = f.metadata
    expected = f.type if isinstance(f.type, str) else f.type.__name__
    if "Union" in str(expected):  # audio.card: name or index
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ConfigError(f"{key} must be a card name (text) or index (number), got {value!r}")
        return value
    if expected == "tuple":  # audio.sites: a list of distinct choices
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of names in quotes, e.g. [\"{meta['choices'][0]}\"], got {value!r}")
        wrong = [v for v in value if v not in meta["choices"]]
        if wrong or len(set(value)) != len(value):
            problem = f"{wrong[0]!r} is not one of them" if wrong else "each may appear once"
            raise ConfigError(f"{key} takes names from {', '.join(meta['choices'])}; {problem}, got {value!r}")
        return tuple(value)
    if expected == "bool":
        ok = isinstance(value, bool)
    elif expected == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = {"int": "a number (whole)", "float": "a number", "bool": "true or false"}.get(expected, "text")
        raise ConfigError(f"{key} must be {kind}, got {value!r}")
    if meta["choices"] and value not in meta["choices"]:
        allowed = ", ".join(repr(c) if c == "" else str(c) for c in meta["choices"])
        raise ConfigError(f"{key} must be one of {allowed}, got {value!r}")
    if meta["minimum"] is not None and not meta["minimum"] <= value <= meta["maximum"]:
        raise ConfigError(f"{key} must be between {meta['minimum']:g} and {meta['maximum']:g}, got {value!r}")
    return value


def config_from_mapping(data: Mapping[str, Any], *, source: Optional[Path] = None,
                        env: Optional[Mapping[str, str]] = None) -> Config:
    """Validate a parsed TOML document into a :class:`Config`."""
    env = os.environ if env is None else env
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section [{sorted(unknown)[0]}] in the configuration; "
                          f"allowed sections: {', '.join(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[{name}] must be a section (table), got {raw!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                raise ConfigError(f"unknown key {name}.{key}; allowed keys in [{name}]: "
                                  f"{', '.join(fields)}")
        sections[name] = cls(**{k: _coerce(name, fields[k], v) for k, v in raw.items()})
    storage = sections["storage"]
    if not storage.data_dir:
        data_dir = env.get("HEARTPI_DATA_DIR") or str(DEFAULT_DATA_DIR)
        sections["storage"] = dataclasses.replace(storage, data_dir=data_dir)
    gpio = sections["gpio"]
    pins = [gpio.button, gpio.led_green, gpio.led_red, gpio.led_amber]
    if len(set(pins)) != len(pins):
        raise ConfigError(f"gpio pins must all differ, got button={gpio.button} green={gpio.led_green} "
                          f"red={gpio.led_red} amber={gpio.led_amber}")
    audio = sections["audio"]
    if audio.site and audio.sites:
        raise ConfigError(f"set audio.site (one place) or audio.sites (a protocol of places), not both; got "
                          f"site={audio.site!r} and sites={list(audio.sites)!r}")
    ClinicTime(sections["device"].timezone)  # an unknown zone is refused now, not on the first page
    server = sections["fhir"].server_url
    if server and not (urlsplit(server).scheme in ("http", "https") and urlsplit(server).netloc):
        raise ConfigError(f"fhir.server_url must be the server's base address, starting https:// (HAPI FHIR: "
                          f"https://host/fhir), got {server!r}")
    # one server, one address: what it was sent is kept under it (a trailing / would start it over)
    sections["fhir"] = dataclasses.replace(sections["fhir"], server_url=server.rstrip("/"))
    return Config(**sections, source=source)


def load_config(path: Union[str, os.PathLike, None] = None, *,
                env: Optional[Mapping[str, str]] = None) -> Config:
    """Find, read and validate the configuration (see the module docstring)."""
    env = os.environ if env is None else env
    explicit = path or env.get("HEARTPI_CONFIG")
    candidate = Path(explicit) if explicit else DEFAULT_CONFIG_PATH
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"configuration file {candidate} does not exist")
        return config_from_mapping({}, env=env)
    try:
        data = tomllib.loads(candidate.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {candidate} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {candidate} cannot be read: {exc.strerror}") from None
    return config_from_mapping(data, source=candidate, env=env)
