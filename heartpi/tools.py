"""Technician tools: provision, selftest, model install/rollback, export, backup/restore, prune, clock.

Each prints one line per step a technician can read and exits non-zero when something
needs their attention.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:  # the tools import the packages only when a command needs them
    from device.clock import ClockResult
    from device.config import Config

EXIT_OK, EXIT_FAILED = 0, 1


def register(sub, dispatch: Callable) -> None:
    p = sub.add_parser("provision", help="first set-up of a device: config, TLS certificate, admin")
    p.add_argument("--root", type=Path, default=Path("/"), help="install into this root (tests, images)")
    p.add_argument("--device-id", default="", help="default: the hostname")
    p.add_argument("--hostname", default="", help="name in the TLS certificate (default: hostname)")
    p.add_argument("--admin-email", help="create the first administrator (password from the "
                   "terminal, or stdin when not a terminal)")
    p.add_argument("--card", default="", help="sound card name substring or index")
    p.add_argument("--timezone", default="", help="the clinic's time zone, e.g. Africa/Nairobi (default: "
                   "the system's, as raspi-config set it; else UTC)")
    p.add_argument("--sites", default="", help="the clinic's protocol of places, in order, comma-separated, "
                   "e.g. aortic,pulmonic,tricuspid,mitral, or one place (default: none; README, audio.sites)")
    p.add_argument("--force", action="store_true", help="replace an existing config, certificate or admin")
    p.set_defaults(func=dispatch, tool="provision")

    p = sub.add_parser("selftest", help="check sound card, LEDs, button, model, disk and database")
    p.add_argument("--button-timeout", type=float, default=15.0, help="seconds to wait for a press (0 = skip)")
    p.add_argument("--capture-seconds", type=float, default=1.0)
    p.set_defaults(func=dispatch, tool="selftest")

    p = sub.add_parser("model", help="install, roll back or show the model")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    q = msub.add_parser("install", help="verify and install a .tflite (its .json beside it)")
    q.add_argument("file", type=Path)
    q.set_defaults(func=dispatch, tool="model_install")
    q = msub.add_parser("rollback", help="go back to the previously installed model")
    q.set_defaults(func=dispatch, tool="model_rollback")
    q = msub.add_parser("info", help="show the model in use")
    q.set_defaults(func=dispatch, tool="model_info")
    q = msub.add_parser("calibrate", help="re-set the threshold from recordings of healthy people on this device")
    q.add_argument("recordings", type=int, nargs="*", metavar="RECORDING_ID",
                   help="ids (web page or 'heartpi export') of recordings of known-healthy people")
    q.add_argument("--confirmed-normal", action="store_true",
                   help="also use every recording from this device whose person a clinician found "
                        "healthy (the finding on the recording's web page)")
    q.add_argument("--specificity", type=float, help="wanted share of healthy people called normal "
                   "(default: the model's validation specificity)")
    q.add_argument("--reset", action="store_true", help="remove the calibration")
    q.set_defaults(func=dispatch, tool="model_calibrate")

    p = sub.add_parser("export", help="export records as CSV or FHIR R4 JSON")
    p.add_argument("--format", choices=("csv", "fhir", "fhir-transaction"), default="csv",
                   help="fhir: a collection Bundle (to keep or read); fhir-transaction: a transaction Bundle "
                        "to POST to a FHIR server's base URL (ids name this device; sending again updates)")
    p.add_argument("--patient", type=int)
    p.add_argument("--since", help="YYYY-MM-DD, the clinic's day (device.timezone)")
    p.add_argument("--until", help="YYYY-MM-DD (exclusive), the clinic's day")
    p.add_argument("--referrals-only", action="store_true",
                   help="only the recordings that asked for a referral: abnormal, or the box could not judge the person")
    p.add_argument("--no-audio", action="store_true", help="FHIR: leave the audio out")
    p.add_argument("--output", "-o", type=Path, help="file (default: standard output)")
    p.add_argument("--send", metavar="URL", help="with --format fhir-transaction: POST the records to this FHIR "
                   "server's base address (e.g. https://fhir.example.org/fhir) instead of writing them out")
    p.add_argument("--token-file", type=Path, help="with --send: a file holding the server's access token "
                   "(sent as 'Authorization: Bearer')")
    p.add_argument("--ca-file", type=Path, help="with --send: the certificate authority of a server whose "
                   "certificate is its own (PEM)")
    p.add_argument("--batch", type=int, default=5, help="with --send: recordings per transaction (a visit's "
                   "recordings always go together; default 5, about 13 MB with 48 kHz audio)")
    p.set_defaults(func=dispatch, tool="export")

    p = sub.add_parser("fhir-sync", help="send the FHIR server (fhir.server_url) the records changed since the "
                       "last send (heartpi-fhir-sync.timer runs it every hour)")
    p.add_argument("--all", action="store_true", help="send every record again, as to a new server")
    p.add_argument("--token-file", type=Path, help="the server's access token (default: the service's "
                   "credential, else /etc/heartpi/fhir-token when it exists)")
    p.set_defaults(func=dispatch, tool="fhir_sync")

    p = sub.add_parser("backup", help="back up records, recordings and models to a .tar (safe while running)",
                       description="OUTPUT.tar: the whole device (database, recordings, models), restored "
                       "with 'heartpi restore'. OUTPUT.sqlite3: a copy of the database alone.")
    p.add_argument("output", type=Path, metavar="OUTPUT.tar")
    p.set_defaults(func=dispatch, tool="backup")

    p = sub.add_parser("restore", help="put a backup (.tar) onto this device: a new SD card, a replaced device")
    p.add_argument("archive", type=Path, metavar="BACKUP.tar")
    p.add_argument("--force", action="store_true", help="replace the records this device already holds "
                   "(they are moved aside, not deleted)")
    p.set_defaults(func=dispatch, tool="restore")

    p = sub.add_parser("prune", help="delete old recordings to free space (after a backup and an export)")
    p.add_argument("--before", required=True, metavar="YYYY-MM-DD", help="recordings made before this day (the clinic's, device.timezone)")
    p.add_argument("--verdict", choices=("normal", "abnormal", "poor_signal"), help="only these")
    p.add_argument("--reason", default="deleted to free space", help="kept in the audit log")
    p.add_argument("--yes", action="store_true", help="delete them; without it, only say what would go")
    p.add_argument("--unsent-too", action="store_true", help="with fhir.server_url set: delete them even if the "
                   "FHIR server does not hold them as they are now (the server keeps what it has of pruned records)")
    p.set_defaults(func=dispatch, tool="prune")

    p = sub.add_parser("clock", help="the device clock, set from the web page")
    csub = p.add_subparsers(dest="clock_command", metavar="ACTION", required=True)
    q = csub.add_parser("apply", help="apply a clock change sent from the web page (run by "
                        "heartpi-clock.service, which may set the clock)")
    q.set_defaults(func=dispatch, tool="clock_apply")


def _line(ok: bool, what: str, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {what}{': ' + detail if detail else ''}", flush=True)
    return ok


def _config(args):
    from device.config import load_config

    return load_config(args.config)


# -- provision ---------------------------------------------------------------------------------
CONFIG_TEMPLATE = """# HeartPi configuration (written by 'heartpi provision' on {date}).
# Every key and its allowed values: README, "Configuration".
[device]
id = {device_id}
timezone = {timezone}
result_hold_seconds = 30
referral_alarm_share = 0.5

[audio]
card = {card}
sites = {sites}
sample_rate = 48000
record_seconds = 20
min_seconds = 5

[gpio]
button = 17
led_green = 27
led_red = 22
led_amber = 23

[storage]
data_dir = "/var/lib/heartpi"

[web]
port = 443
tls_cert = "/etc/heartpi/tls/heartpi.crt"
tls_key = "/etc/heartpi/tls/heartpi.key"

[fhir]
# The region's FHIR server, sent what changed every hour (token: /etc/heartpi/fhir-token).
server_url = ""
"""


def _inside(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


def provision(args: argparse.Namespace) -> int:
    from device.clinic_time import system_zone
    from device.config import config_from_mapping
    from device.errors import ConfigError
    from device.records import RecordStore
    from webui.passwords import hash_password

    root = args.root.resolve()
    host = args.hostname or socket.gethostname()
    device_id = args.device_id or host
    ok = True
    etc = _inside(root, "/etc/heartpi")
    etc.mkdir(parents=True, exist_ok=True)
    os.chmod(etc, 0o755)
    config_path = etc / "heartpi.toml"
    card = json.dumps(int(args.card) if args.card.isdigit() else args.card)
    if config_path.exists() and not args.force:
        _line(True, "configuration", f"kept existing {config_path} (use --force to rewrite)")
    else:
        timezone = args.timezone or system_zone(root)
        text = CONFIG_TEMPLATE.format(date=_dt.date.today().isoformat(), device_id=json.dumps(device_id),
                                      card=card, timezone=json.dumps(timezone),
                                      sites=json.dumps([s.strip() for s in args.sites.split(",") if s.strip()]))
        import tomllib

        try:
            config_from_mapping(tomllib.loads(text), env={})  # never write a file we would refuse
        except ConfigError as exc:
            _line(False, "configuration", str(exc))
            return EXIT_FAILED
        config_path.write_text(text)
        os.chmod(config_path, 0o644)
        _line(True, "configuration", f"wrote {config_path} (device id {device_id}, time zone {timezone})")

    tls = etc / "tls"
    tls.mkdir(exist_ok=True)
    os.chmod(tls, 0o750)
    cert, key = tls / "heartpi.crt", tls / "heartpi.key"
    if cert.exists() and not args.force:
        _line(True, "TLS certificate", f"kept existing {cert} (use --force to replace)")
    else:
        result = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "1825", "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(cert),
             "-addext", f"subjectAltName=DNS:{host},DNS:{host}.local,DNS:localhost,IP:127.0.0.1"],
            capture_output=True, text=True)
        if result.returncode != 0:
            ok &= _line(False, "TLS certificate", result.stderr.strip().splitlines()[-1] if result.stderr else "openssl failed")
        else:
            os.chmod(key, 0o600)
            os.chmod(cert, 0o644)
            _line(True, "TLS certificate", f"self-signed for {host}, {host}.local ({cert})")

    data = _inside(root, "/var/lib/heartpi")
    (data / "recordings").mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o750)
    store = RecordStore(data / "heartpi.sqlite3")
    _line(True, "database", f"{data / 'heartpi.sqlite3'} at schema {store.schema_version()}")
    if args.admin_email:
        existing = store.user_by_email(args.admin_email)
        if store.count_admins() and not args.force:
            ok &= _line(False, "administrator", "an administrator already exists; use --force to add or "
                        "reset one")
        else:
            password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else _tty_password()
            try:
                hashed = hash_password(password)
            except ValueError as exc:
                store.close()
                _line(False, "administrator", str(exc))
                return EXIT_FAILED
            if existing:
                store.update_user(existing["id"], actor="provision", audit_action="user.password_reset",
                                  password_hash=hashed, role="admin", active=1, approved=1)
            else:
                store.add_user(email=args.admin_email, password_hash=hashed, role="admin", actor="provision")
            _line(True, "administrator", args.admin_email)
    store.close()
    if root == Path("/") and os.geteuid() == 0:
        _chown_tree(data, "heartpi")
        _chown_path(key, "root", "heartpi-web")
        _chown_path(tls, "root", "heartpi-web")
    return EXIT_OK if ok else EXIT_FAILED


def _tty_password() -> str:
    import getpass

    first = getpass.getpass("Administrator password (at least 10 characters): ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("heartpi: the two passwords differ")
    return first


def _chown_path(path: Path, user: str, group: str) -> None:
    try:
        shutil.chown(path, user, group)
    except (LookupError, OSError):
        pass


def _chown_tree(path: Path, user: str) -> None:
    for item in [path, *path.rglob("*")]:
        _chown_path(item, user, user)


# -- selftest ----------------------------------------------------------------------------------
def selftest(args: argparse.Namespace) -> int:
    import numpy as np

    from device import DeviceError
    from device.capture import PyAudioSource
    from device.records import RecordStore
    from device.storage import free_mb
    from model import Classifier, ModelError

    results = []
    try:
        config = _config(args)
    except DeviceError as exc:
        _line(False, "configuration", str(exc))
        return EXIT_FAILED
    results.append(_line(True, "configuration", str(config.source or "defaults")))

    source = PyAudioSource(config.audio.card, config.audio.sample_rate, config.audio.frames_per_buffer)
    try:
        source.open()
        results.append(_line(True, "sound card", f"{source.name} opens at {source.rate} Hz"))
        capture = source.record(args.capture_seconds, threading.Event())
        samples = capture.samples
        rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        level = f"{capture.duration_s:.1f} s, RMS {20 * np.log10(max(rms, 1e-10)):.1f} dBFS, peak " \
                f"{20 * np.log10(max(peak, 1e-10)):.1f} dBFS, {capture.overflows} overflow(s)"
        results.append(_line(samples.size > 0 and peak > 0, "capture level",
                             level + ("" if peak > 0 else " - digital silence: check the microphone")))
    except DeviceError as exc:
        results.append(_line(False, "sound card", str(exc)))
    finally:
        source.close()

    try:
        from device import gpio

        indicator = gpio.Indicator(button_pin=config.gpio.button, green_pin=config.gpio.led_green,
                                   red_pin=config.gpio.led_red, amber_pin=config.gpio.led_amber,
                                   long_press_seconds=config.gpio.long_press_seconds)
        for name in ("green", "amber", "red"):
            indicator.leds[name].on()
            time.sleep(0.3)
            indicator.leds[name].off()
        results.append(_line(True, "LEDs", "green, amber, red each lit for 0.3 s (look at the box)"))
        if args.button_timeout > 0:
            pressed = threading.Event()
            indicator.on_press = pressed.set
            print(f"      press the button within {args.button_timeout:.0f} s ...", flush=True)
            results.append(_line(pressed.wait(args.button_timeout), "button",
                                 "press seen" if pressed.is_set() else "no press seen: check the wiring"))
        indicator.close()
    except Exception as exc:  # gpiozero raises many kinds (BadPinFactory, PinInvalidPin...)
        results.append(_line(False, "GPIO", f"{exc.__class__.__name__}: {exc}"))
    results.extend(_power_check())

    try:
        classifier = Classifier.load(config.model_file, calibration=config.calibration_file)
        results.append(_line(True, "model", f"sha256 {classifier.sha256[:12]} matches its metadata "
                                            f"({classifier.runtime})"))
        results.extend(_reference_checks(classifier))
    except ModelError as exc:
        results.append(_line(False, "model", str(exc)))

    results.append(_phone_decoders_check())
    results.append(_clock_check(time.time()))
    results.append(_fhir_server_check(config))
    free = free_mb(config.data_dir)
    results.append(_line(free >= config.storage.min_free_mb, "disk space",
                         f"{free:.0f} MB free in {config.data_dir} (need {config.storage.min_free_mb} MB)"))
    try:
        store = RecordStore(config.database_path)
        check = store.integrity_check()
        results.append(_line(check == "ok", "database", f"{config.database_path}: integrity {check}, "
                                                        f"schema {store.schema_version()}"))
        store.close()
    except DeviceError as exc:
        results.append(_line(False, "database", str(exc)))
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK


def _fhir_server_check(config: "Config") -> bool:
    """The FHIR server the hourly send goes to answers as one (its CapabilityStatement), through
    this device's network and, with ``fhir.ca_file``, its own certificate. Sends nothing."""
    if not config.fhir.server_url:
        return _line(True, "FHIR server", "none set (fhir.server_url): records stay on the device until exported")
    from heartpi.fhir_send import FhirSendError, capability_statement, tls_context
    from heartpi.fhir_sync import read_token

    url = config.fhir.server_url
    try:
        statement = capability_statement(url, token=read_token(), context=tls_context(
            url, config.fhir.ca_path))
    except FhirSendError as exc:
        return _line(False, "FHIR server", str(exc))
    software = statement.get("software") or {}
    what = " ".join(filter(None, (software.get("name"), software.get("version")))) or "a FHIR server"
    return _line(True, "FHIR server", f"{url} answers: {what}, FHIR {statement.get('fhirVersion', '?')} (the token "
                 "is checked by the first send: 'sudo heartpi fhir-sync')")


#: FFmpeg decoders behind dsp.read_audio: phones' AAC (M4A, 3GP) and AMR, apps' MP3, Opus, Vorbis, FLAC,
#: and voice recorders' compressed WAVs (IMA and MS ADPCM, GSM 6.10)
PHONE_DECODERS = ("aac", "amrnb", "mp3", "opus", "vorbis", "flac", "adpcm_ima_wav", "adpcm_ms", "gsm_ms")


def _phone_decoders_check() -> bool:
    """Uploads of phones' compressed recordings need PyAV and its bundled decoders."""
    try:
        import av
    except ImportError:
        return _line(False, "phone recordings", "PyAV is not installed: uploads must be WAV until "
                     "`pip install av` in HeartPi's environment (tools/install-pi.sh does it)")
    missing = []
    for name in PHONE_DECODERS:
        try:
            av.codec.Codec(name, "r")
        except Exception:  # PyAV names it UnknownCodecError; any failure means "cannot decode"
            missing.append(name)
    if missing:
        return _line(False, "phone recordings", f"PyAV {av.__version__} lacks decoders: {', '.join(missing)}")
    return _line(True, "phone recordings", f"M4A, 3GP, AMR, MP3, OGG, FLAC and ADPCM or GSM WAV "
                 f"decoded by PyAV {av.__version__}")


def _power_check() -> list[bool]:
    """Under-voltage in the last ~2 s, i.e. while the sound card recorded and the LEDs were lit
    (device/power.py); not a line that counts where there is no Raspberry Pi voltage sensor."""
    from device.power import ADVICE, PowerWatch

    watch = PowerWatch.find()
    low = watch.poll()
    if low is None:
        print("SKIP  power supply: not measured (no Raspberry Pi voltage sensor, rpi_volt, here)", flush=True)
        return []
    if low:
        return [_line(False, "power supply", f"under-voltage while recording: {ADVICE}")]
    return [_line(True, "power supply", "no under-voltage while recording and lighting the LEDs")]


def _clock_check(now: float) -> bool:
    """The clock dates every recording: it must at least be possible (see device/clock.py)."""
    from device.clock import clock_is_plausible, iso_utc

    shown = iso_utc(now)[:16].replace("T", " ") + " UTC"
    if clock_is_plausible(now):
        return _line(True, "clock", f"{shown}; compare with a phone (web page, Device, sets it)")
    return _line(False, "clock", f"{shown} cannot be right: set it from the web page's Device page, "
                 "or connect the device to the internet once")


def _reference_checks(classifier) -> list[bool]:
    """Classify each bundled reference recording (its label is the file name's prefix), one
    PASS/FAIL line each; shared by selftest and model install."""
    from model.classifier import ASSETS

    results = []
    for path in sorted((ASSETS / "reference").glob("*.wav")):
        expected = path.name.split("-")[0]
        label = classifier.classify_file(path).label
        results.append(_line(label == expected, f"reference {path.name}", f"{label} (expected {expected})"))
    return results


# -- model install / rollback -----------------------------------------------------------------
def _swap_link(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def model_install(args: argparse.Namespace) -> int:
    from model import Classifier, ModelError
    from model.classifier import metadata_path

    config = _config(args)
    try:
        candidate = Classifier.load(args.file)
    except ModelError as exc:
        _line(False, "model file", f"{exc}; the current model is kept")
        return EXIT_FAILED
    _line(True, "model file", f"sha256 {candidate.sha256[:12]} matches its metadata")
    if not all(_reference_checks(candidate)):
        print("the new model fails the reference recordings; the current model is kept")
        return EXIT_FAILED
    models = config.models_dir
    version_dir = models / candidate.sha256[:16]
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_mkdir(models)))
    shutil.copyfile(args.file, staging / "heartpi-cnn.tflite")
    shutil.copyfile(metadata_path(args.file), staging / "heartpi-cnn.json")
    if version_dir.exists():
        shutil.rmtree(staging)
    else:
        os.replace(staging, version_dir)
    current = models / "current"
    if current.is_symlink():
        _swap_link(models / "previous", os.readlink(current))
    _swap_link(current, version_dir.name)
    _line(True, "installed", f"{version_dir.name} is now current; restart heartpi-daemon and heartpi-web")
    return EXIT_OK


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_rollback(args: argparse.Namespace) -> int:
    config = _config(args)
    models = config.models_dir
    current, previous = models / "current", models / "previous"
    if not previous.is_symlink():
        _line(False, "rollback", "no previous model to go back to")
        return EXIT_FAILED
    old = os.readlink(previous)
    now = os.readlink(current) if current.is_symlink() else None
    _swap_link(current, old)
    if now:
        _swap_link(previous, now)
    _line(True, "rollback", f"{old} is current again; restart heartpi-daemon and heartpi-web")
    return EXIT_OK


def model_info(args: argparse.Namespace) -> int:
    from model import Classifier, ModelError

    config = _config(args)
    try:
        classifier = Classifier.load(config.model_file, calibration=config.calibration_file)
    except ModelError as exc:
        _line(False, "model", str(exc))
        return EXIT_FAILED
    meta = classifier.metadata
    test = meta.get("metrics", {}).get("test_int8", {})
    print(f"model {classifier.path} sha256 {classifier.sha256} created {meta.get('created')}, "
          f"threshold {classifier.threshold:.3f}{' (calibrated for this device)' if classifier.calibrated else ''}, "
          f"test MAcc {test.get('macc', float('nan')):.3f}, runtime {classifier.runtime}")
    return EXIT_OK


def model_calibrate(args: argparse.Namespace) -> int:
    """Re-set the decision threshold from recordings of known-healthy people on this device.

    A stethoscope the model never heard shifts its scores; on held-out sources this step
    raised mean MAcc (model card, "calibrated"). The threshold becomes the quantile of the
    healthy recordings' scores that gives the specificity the model had on validation. Each
    recording is scored again from its audio by the model and feature settings in use now, so
    the threshold fits what the device computes today, whatever scored it when it was made.
    """
    import numpy as np

    import dsp
    from device.records import RecordStore
    from model import Classifier

    config = _config(args)
    if args.reset:
        config.calibration_file.unlink(missing_ok=True)
        _line(True, "calibration", "removed; the model's own threshold applies after a restart")
        return EXIT_OK
    classifier = Classifier.load(config.model_file)
    store = RecordStore(config.database_path)
    named = [store.get_recording(i) for i in args.recordings]
    confirmed = store.list_recordings(finding="normal", source="device", device_id=config.device_id,
                                      limit=1 << 30) if args.confirmed_normal else []
    store.close()
    missing = [i for i, r in zip(args.recordings, named) if r is None]
    if missing:
        _line(False, "calibration", f"no recording with id {', '.join(map(str, missing))}")
        return EXIT_FAILED
    recordings = [r for r in named if r is not None]
    if not recordings and not confirmed:
        _line(False, "calibration", "name recordings of healthy people, or use --confirmed-normal "
              "once clinicians have entered their findings")
        return EXIT_FAILED
    given = {r.id for r in recordings}
    recordings += [r for r in confirmed if r.id not in given]
    usable, scores = [], []
    for rec in recordings:
        try:
            verdict = classifier.classify_file(config.recordings_dir / rec.file)
        except dsp.BadAudioError:  # audio gone or damaged (the backup command names such files)
            continue
        if verdict.p_abnormal is not None and verdict.label != "poor_signal":
            usable.append(rec)
            scores.append(verdict.p_abnormal)
    if len(usable) < Classifier.MIN_CALIBRATION_RECORDINGS:
        _line(False, "calibration", f"{len(usable)} usable recordings (audio on this device, good signal); "
              f"record at least {Classifier.MIN_CALIBRATION_RECORDINGS} healthy people on this device")
        return EXIT_FAILED
    specificity = args.specificity or classifier.metadata.get("metrics", {}).get(
        "validation_int8", {}).get("specificity", 0.85)
    threshold = float(np.quantile(scores, min(0.99, specificity)))
    # Never 0 or 1 (everyone abnormal, or no one). Not 0.01 either, as until 2026-11-30: the
    # ensemble shipped since scores healthy hearts 0-0.02 (its own threshold is 0.076), so a
    # device's quantile can rightly sit below 0.01. The int8 output's step is 1/256.
    threshold = float(np.clip(threshold, 0.001, 0.999))
    data = {"model_sha256": classifier.sha256, "features": classifier.params.to_dict(),
            "threshold": threshold, "specificity": specificity,
            "recordings": len(usable), "recording_ids": [r.id for r in usable],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    from device.storage import atomic_write

    atomic_write(config.calibration_file, json.dumps(data, indent=1).encode())
    _line(True, "calibration", f"threshold {threshold:.3f} (model's own {classifier.threshold:.3f}) from "
          f"{len(usable)} healthy recordings, target specificity {specificity:.2f}; restart heartpi-daemon "
          "and heartpi-web")
    return EXIT_OK


# -- export / backup ---------------------------------------------------------------------------
def export(args: argparse.Namespace) -> int:
    from device.records import RecordStore
    from webui.exporting import fhir_json, select, to_csv, to_fhir_bundle, to_fhir_transaction

    config = _config(args)
    try:
        since, until = config.clinic_time.day_range(args.since, args.until)
    except ValueError as exc:
        _line(False, "export", str(exc))
        return EXIT_FAILED
    if args.send and (args.format != "fhir-transaction" or args.output):
        _line(False, "export", "--send posts a FHIR transaction to the server: use it with --format "
              "fhir-transaction and without --output")
        return EXIT_FAILED
    if not args.send and (args.token_file or args.ca_file):
        _line(False, "export", "--token-file and --ca-file go with --send")
        return EXIT_FAILED
    store = RecordStore(config.database_path)
    recs = select(store, patient_id=args.patient, since=since, until=until, referrals_only=args.referrals_only)
    if args.send:
        try:
            return _send_to_fhir_server(args, config, store, recs)
        finally:
            store.close()
    if args.format == "csv":
        text = to_csv(store, recs, clinic=config.clinic_time)
    else:
        bundle = to_fhir_transaction if args.format == "fhir-transaction" else to_fhir_bundle
        text = fhir_json(bundle(store, recs, device_id=config.device_id,
                                recordings_dir=config.recordings_dir, include_audio=not args.no_audio))
    store.audit("cli:export", f"export.{args.format}", *_export_audit_what(args))
    store.close()
    if args.output:
        args.output.write_text(text)
        print(f"{len(recs)} recording(s) written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _export_audit_what(args: argparse.Namespace) -> tuple[str, str]:
    """An export's audit target (the patient, if one) and detail (the days, and whether referrals only)."""
    return (f"patient:{args.patient}" if args.patient else "",
            f"{args.since or '-'}..{args.until or '-'}" + (" referrals only" if args.referrals_only else ""))


def _send_to_fhir_server(args: argparse.Namespace, config, store, recs) -> int:
    """``export --send``: the selected records to a FHIR server, audited whatever came of it."""
    from heartpi.fhir_send import FhirSendError, send, server_host
    from webui.exporting import FHIR_SEND_FAILED, FHIR_SENT, to_fhir_transaction

    host = server_host(args.send)
    what = _export_audit_what(args)
    try:
        token = args.token_file.read_text().strip() if args.token_file else ""
    except OSError as exc:
        _line(False, "FHIR server", f"the token file could not be read ({exc.strerror or exc})")
        return EXIT_FAILED
    if args.batch < 1:
        _line(False, "FHIR server", "--batch must be 1 or more")
        return EXIT_FAILED

    def make_bundle(group):
        return to_fhir_transaction(store, group, device_id=config.device_id, recordings_dir=config.recordings_dir,
                                   include_audio=not args.no_audio)

    def progress(report):
        print(f"  sent {report.recordings} of {len(recs)} recordings", file=sys.stderr, flush=True)

    try:
        report = send(recs, make_bundle, args.send, token=token, ca_file=args.ca_file, batch=args.batch,
                      progress=progress)
    except FhirSendError as exc:
        store.audit("cli:export", FHIR_SEND_FAILED, what[0], f"{what[1]} to {host}: {exc}")
        _line(False, "FHIR server", str(exc))
        return EXIT_FAILED
    store.audit("cli:export", FHIR_SENT, what[0],
                f"{what[1]} to {host}: {report.recordings} recordings, {report.created} resources created, "
                f"{report.updated} updated")
    other = report.other_statuses
    _line(not other, "FHIR server", f"{report.recordings} recording(s) in {report.transactions} transaction(s) to "
          f"{host}: {report.created} resources created, {report.updated} updated"
          + (f"; other answers: {other}" if other else ""))
    return EXIT_OK if not other else EXIT_FAILED


def fhir_sync(args: argparse.Namespace) -> int:
    """Send the configured FHIR server what changed since the last send (:mod:`heartpi.fhir_sync`).
    No server set is no failure: the timer runs on every box, most clinics never set one."""
    from device.records import RecordStore
    from device.send_request import take_send_request
    from heartpi.fhir_send import FhirSendError, server_host
    from heartpi.fhir_sync import sync

    config = _config(args)
    asked = take_send_request(config.send_request_dir)  # first: the path unit starts this while it exists
    if asked:
        print(f"sending now, as {asked.get('requested_by', '?')} asked on the web page")
    if not config.fhir.server_url:
        print("no FHIR server is set (fhir.server_url in /etc/heartpi/heartpi.toml): nothing to send")
        return EXIT_OK
    host = server_host(config.fhir.server_url)
    store = RecordStore(config.database_path)
    try:
        report = sync(store, config, token_file=args.token_file, everything=args.all, progress=lambda sent: print(
            f"  sent {sent.recordings} recordings", file=sys.stderr, flush=True))
    except FhirSendError as exc:
        _line(False, "FHIR server", str(exc))
        return EXIT_FAILED
    finally:
        store.close()
    if report.sent is None and not report.deleted:
        _line(True, "FHIR server", f"{host} has every record: nothing changed since the last send")
        return EXIT_OK
    sent = report.sent
    other = sent.other_statuses if sent else {}
    _line(not other, "FHIR server", (f"{sent.recordings} changed recording(s) in {sent.transactions} transaction(s) "
          f"to {host}: {sent.created} resources created, {sent.updated} updated" if sent else f"to {host}:")
          + (f"; {report.deleted} resource(s) deleted there, as on this device" if report.deleted else "")
          + (f"; other answers: {other}" if other else ""))
    return EXIT_OK if not other else EXIT_FAILED


def backup(args: argparse.Namespace) -> int:
    """A whole-device archive (``.tar``, :mod:`device.backup`) or the database alone (``.sqlite3``)."""
    from device.records import RecordStore

    config = _config(args)
    output: Path = args.output
    if output.suffix in (".sqlite3", ".sqlite", ".db"):
        store = RecordStore(config.database_path)
        try:
            store.backup(output)
            store.audit("cli:backup", "backup.database", "", str(output))
        finally:
            store.close()
        _line(True, "backup", f"database copied to {output} (the recordings are not in it: name the "
              "output .tar for a whole-device backup)")
        return EXIT_OK
    if output.suffix != ".tar":
        _line(False, "backup", f"{output}: name it .tar for the whole device (records, recordings, models) "
              "or .sqlite3 for the database alone")
        return EXIT_FAILED
    from device.backup import create_backup

    summary = create_backup(config, output)
    _line(True, "backup", f"{summary.recordings} recording(s), {summary.bytes / 1e6:.1f} MB of audio, "
          f"written to {output}; it holds patients' records: keep it as safe as the device")
    if summary.missing:
        _line(False, "missing recordings", f"{len(summary.missing)} recording(s) had no audio file on the "
              f"device (first: {summary.missing[0]}); their records are in the backup")
    if summary.damaged:
        _line(False, "damaged recordings", f"{len(summary.damaged)} audio file(s) no longer match their "
              f"checksum (first: {summary.damaged[0]}): the SD card may be failing; replace it soon")
    return EXIT_FAILED if summary.missing or summary.damaged else EXIT_OK


def restore(args: argparse.Namespace) -> int:
    from device.backup import restore_backup

    config = _config(args)
    summary = restore_backup(config, args.archive, force=args.force)
    _line(True, "restore", f"{summary.recordings} recording(s) and {summary.patients} patient(s) from "
          f"device {summary.device_id}'s backup of {summary.created}; everyone logs in again, with the "
          "backup's accounts and passwords")
    if summary.replaced:
        print(f"the data it replaced is in {summary.replaced} (delete it once the restore is checked)")
    print("start HeartPi again: sudo systemctl start heartpi-daemon heartpi-web")
    return EXIT_OK


def prune(args: argparse.Namespace) -> int:
    """Delete the recordings made before a day (see :mod:`device.retention`); a dry run
    unless ``--yes``."""
    from device.records import RecordStore
    from device.retention import delete_recordings
    from device.storage import resolve

    try:
        day = _dt.date.fromisoformat(args.before)
    except ValueError:
        _line(False, "prune", f"--before {args.before!r} is not a date: use YYYY-MM-DD")
        return EXIT_FAILED
    config = _config(args)
    store = RecordStore(config.database_path)
    try:
        old = store.list_recordings(until=config.clinic_time.day_start(day), verdict=args.verdict, limit=1 << 40)
        kind = f"{args.verdict} " if args.verdict else ""
        if config.fhir.server_url and not args.unsent_too:  # the server is where pruned records live on
            sent_through = store.fhir_sent_through(config.fhir.server_url)[0]
            unsent = sum(rec.changed_seq > sent_through for rec in old)
            if unsent:
                _line(False, "prune", f"{unsent} of the {len(old)} {kind}recording(s) made before {day} have not "
                      "reached the FHIR server as they are now: run 'sudo heartpi fhir-sync' first (or back up with "
                      "'heartpi backup' and add --unsent-too)")
                return EXIT_FAILED
        if not args.yes:
            size = 0
            for rec in old:
                path = resolve(config.recordings_dir, rec.file)
                size += path.stat().st_size if path.exists() else 0
            print(f"would delete {len(old)} {kind}recording(s) made before {day} ({size / 1e6:.1f} MB); "
                  "back up ('heartpi backup') and export ('heartpi export') first, then run again with --yes")
            return EXIT_OK
        deleted = delete_recordings(store, config.recordings_dir, config.cache_dir, old,
                                    actor="cli:prune", reason=args.reason, from_fhir_server=False)
    finally:
        store.close()
    _line(True, "prune", f"deleted {deleted.recordings} {kind}recording(s) made before {day}, "
          f"{deleted.bytes_freed / 1e6:.1f} MB freed")
    return EXIT_OK


def clock_apply(args: argparse.Namespace) -> int:
    """Apply the web page's clock request, if any (``heartpi-clock.service``)."""
    from device.clock import ClockError

    try:
        result = apply_clock_change(_config(args))
    except ClockError as exc:
        _line(False, "device clock", str(exc))
        return EXIT_FAILED
    if result is None:
        print("no clock change requested")
    else:
        _line(True, "device clock", f"{result.message} at the request of {result.requested_by}; "
              f"now {result.applied_at}")
    return EXIT_OK


def apply_clock_change(config: "Config", *, set_clock: Optional[Callable[[float], None]] = None
                       ) -> "Optional[ClockResult]":
    """Set the clock as requested, then re-date the recordings the wrong clock stamped.

    Only recordings stamped by that very clock move (see :meth:`RecordStore.redate_recordings`).
    """
    import sqlite3

    from device.clock import apply_clock_request
    from device.errors import DeviceError
    from device.records import RecordStore

    def redate(offset: float, clock_boot: float) -> str:
        try:
            store = RecordStore(config.database_path)
            try:
                moved = store.redate_recordings(offset, clock_boot, actor="clock")
            finally:
                store.close()
        except (DeviceError, OSError, sqlite3.Error) as exc:  # the clock is set: say so, and what failed
            return f"; the recordings made with the wrong time could not be re-dated ({exc})"
        if not moved:
            return ""
        return f"; {moved} recording{' was' if moved == 1 else 's were'} made with the wrong time and re-dated"

    kwargs: dict[str, Any] = {"set_clock": set_clock} if set_clock else {}
    return apply_clock_request(config.clock_dir, after_set=redate, **kwargs)
