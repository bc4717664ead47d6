"""The ``heartpi`` command: one entry point, one subcommand per job.

Each subcommand imports what it needs when it runs, so ``heartpi --version`` stays instant
and the daemon never loads the web UI (nor the web UI the daemon).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("heartpi")


def _error(message: str) -> None:
    print(f"heartpi: {message}", file=sys.stderr)


def setup_logging(verbose: bool = False) -> None:
    """Readable in ``journalctl``: under systemd the journal adds time and unit itself."""
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") \
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt, force=True)


def _config(args: argparse.Namespace):
    from device.config import load_config

    return load_config(args.config)


# -- signal analysis -----------------------------------------------------------------------
def cmd_analyze(args: argparse.Namespace) -> int:
    """Print duration, rate, quality figures and heart rate of each file."""
    import dsp

    failed = False
    for path in args.files:
        try:
            audio = dsp.read_audio(path, min_seconds=0.5)
        except dsp.BadAudioError as exc:
            _error(f"{path}: {exc}")
            failed = True
            continue
        samples, rate = audio.samples, audio.rate
        report = dsp.quality(samples, rate)
        bpm = f"{report.heart_rate_bpm:.0f} bpm" if report.heart_rate_bpm else "no heart rate"
        verdict = "quality ok" if report.ok else "poor signal: " + ", ".join(report.reasons)
        decoded = f"{audio.format}, " if audio.decoded else ""
        print(f"{path}: {decoded}{report.duration_s:.1f} s at {rate} Hz, level {report.rms_dbfs:.1f} dBFS, "
              f"clipped {100 * report.clipped_fraction:.2f}%, heart-band share "
              f"{report.band_share_db:.1f} dB, periodicity {report.periodicity:.2f}, {bpm}; {verdict}")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_classify(args: argparse.Namespace) -> int:
    """Classify WAV files: one line (or JSON object) each; bad files on stderr, others go on."""
    import dsp
    from model import DISCLAIMER, Classifier, ModelError

    try:
        classifier = Classifier.load(args.model)
    except ModelError as exc:
        _error(str(exc))
        return EXIT_FAILED
    failed = False
    for path in args.files:
        try:
            verdict = classifier.classify_file(path)
        except dsp.BadAudioError as exc:
            _error(f"{path}: {exc}")
            failed = True
            continue
        if args.json:
            print(json.dumps({"file": path, **verdict.to_dict()}, sort_keys=True))
            continue
        p = f"p(abnormal) {verdict.p_abnormal:.3f} vs threshold {verdict.threshold:.3f}" \
            if verdict.p_abnormal is not None else "not scored"
        bpm = f"{verdict.heart_rate_bpm:.0f} bpm" if verdict.heart_rate_bpm else "heart rate unknown"
        why = f" [{', '.join(verdict.quality_reasons)}]" if verdict.quality_reasons else ""
        caution = "".join(f"; {text}" for text in (verdict.left_out_note, verdict.caution) if text)
        print(f"{path}: {verdict.text.upper()}{why} ({p}, {bpm}, {verdict.duration_s:.1f} s){caution}")
    if not args.json:
        print(DISCLAIMER, file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# -- device and web --------------------------------------------------------------------------
def cmd_daemon(args: argparse.Namespace) -> int:
    from device import DeviceError
    from device.runner import run_daemon
    from model import ModelError

    setup_logging(args.verbose)
    try:
        config = _config(args)
        return run_daemon(config, simulate=args.simulate, input_path=args.input, presses=args.presses,
                          realtime=args.speed)
    except (DeviceError, ModelError) as exc:
        log.error("%s", exc)
        _error(str(exc))
        return EXIT_FAILED


def cmd_web(args: argparse.Namespace) -> int:
    from device import DeviceError
    from device.backup import data_dir_in_use
    from webui import WebError, create_app
    from webui.serve import serve

    setup_logging(args.verbose)
    try:
        config = _config(args)
        with data_dir_in_use(config):  # a restore waits for the page to stop, and the page for it
            app = create_app({"HEARTPI_CONFIG": config})
            serve(app, args.host or config.web.host, args.port or config.web.port,
                  tls_cert=config.web.tls_cert, tls_key=config.web.tls_key)
    except (DeviceError, WebError) as exc:
        _error(str(exc))
        return EXIT_FAILED
    return EXIT_OK


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    from device import DeviceError
    from device.records import RecordStore
    from webui.passwords import hash_password

    try:
        config = _config(args)
        password = _read_password(f"Password for {args.email}: ")
        store = RecordStore(config.database_path)
        store.add_user(email=args.email, password_hash=hash_password(password), role=args.role,
                       actor="cli:user-add")
    except (ValueError, DeviceError) as exc:
        _error(str(exc))
        return EXIT_FAILED
    print(f"account {args.email} ({args.role}) created")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from heartpi.demo import run_demo

    setup_logging(args.verbose)
    return run_demo(host=args.host, port=args.port, presses=args.presses, once=args.once,
                    data_dir=args.data_dir, simulate={"auto": None, "yes": True, "no": False}[args.simulate])


#: Each package's exception root: what a tool reports in one line (its message says what to do).
ERROR_ROOTS = (("device.errors", "DeviceError"), ("dsp.errors", "DSPError"), ("model.errors", "ModelError"),
               ("webui.errors", "WebError"))


def _is_reported_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from one of our packages. Looked up among the modules already
    imported: a package never imported cannot have raised, and a tool that never needed the
    model (``backup``, ``clock apply``) should not load it just to name an exception class."""
    roots = tuple(getattr(sys.modules[module], name) for module, name in ERROR_ROOTS if module in sys.modules)
    return isinstance(exc, roots)


def cmd_tool(args: argparse.Namespace) -> int:
    """Technician tools live in heartpi.tools; imported only when used. A bad configuration, a
    missing model or an unreadable recording ends in one line on stderr, not a traceback."""
    from heartpi import tools

    try:
        return getattr(tools, args.tool)(args)
    except Exception as exc:
        if not _is_reported_error(exc):
            raise
        _error(str(exc))
        return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heartpi",
        description="HeartPi heart-sound screening aid (not a diagnostic device).")
    parser.add_argument("--version", action="version", version=f"heartpi {__version__}")
    parser.add_argument("--config", help="configuration file (default: $HEARTPI_CONFIG or "
                        "/etc/heartpi/heartpi.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("analyze", help="signal figures of WAV files (duration, quality, heart rate)")
    p.add_argument("files", nargs="+", metavar="FILE.wav")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("classify", help="screen WAV files: normal / abnormal: refer / poor signal")
    p.add_argument("files", nargs="+", metavar="FILE.wav")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--model", help="model .tflite (default: the bundled model)")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("daemon", help="run the device (button, LEDs, capture, records)")
    p.add_argument("--simulate", action="store_true", help="no hardware: mock pins, WAV files as input")
    p.add_argument("--input", type=Path, help="WAV file or folder to play when simulating "
                   "(default: the bundled reference recordings)")
    p.add_argument("--presses", type=int, help="simulate: press the button N times, then exit")
    p.add_argument("--speed", type=float, default=None, help="simulate: playback speed "
                   "(1 = real time; default 1, or instant with --presses)")
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("web", help="serve the clinic web page (production WSGI server)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_web)

    p = sub.add_parser("demo", help="device (simulated without hardware) + web page, one-time demo login")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--presses", type=int, default=4, help="recordings to make at start")
    p.add_argument("--once", action="store_true", help="exit after the first recordings")
    p.add_argument("--data-dir", type=Path, help="default: $HEARTPI_DATA_DIR or ./var/demo")
    p.add_argument("--simulate", choices=("auto", "yes", "no"), default="auto",
                   help="auto: the real device when GPIO and a sound card are present")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("user", help="manage web accounts")
    user_sub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    q = user_sub.add_parser("add", help="create an account (password from the terminal or stdin)")
    q.add_argument("email")
    q.add_argument("--role", choices=("admin", "clinician", "health_worker"), default="clinician")
    q.set_defaults(func=cmd_user_add)

    from heartpi import tools

    tools.register(sub, cmd_tool)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from dsp.heap import reuse_freed_heap

    reuse_freed_heap()  # every HeartPi process classifies (daemon, web uploads, classify)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
