"""The ``heartpi`` command: one entry point, one subcommand per job.

Each subcommand imports what it needs when it runs, so ``heartpi --version`` stays instant
and the daemon never loads the web UI (nor the web UI the daemon).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence

from . import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _error(message: str) -> None:
    print(f"heartpi: {message}", file=sys.stderr)


def cmd_analyze(args: argparse.Namespace) -> int:
    """Print duration, rate, quality figures and heart rate of each file."""
    import dsp

    failed = False
    for path in args.files:
        try:
            samples, rate = dsp.read_wav(path, min_seconds=0.5)
        except dsp.BadAudioError as exc:
            _error(f"{path}: {exc}")
            failed = True
            continue
        report = dsp.quality(samples, rate)
        bpm = f"{report.heart_rate_bpm:.0f} bpm" if report.heart_rate_bpm else "no heart rate"
        verdict = "quality ok" if report.ok else "poor signal: " + ", ".join(report.reasons)
        print(f"{path}: {report.duration_s:.1f} s at {rate} Hz, level {report.rms_dbfs:.1f} dBFS, "
              f"clipped {100 * report.clipped_fraction:.2f}%, heart-band share "
              f"{report.band_share_db:.1f} dB, periodicity {report.periodicity:.2f}, {bpm}; {verdict}")
    return EXIT_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heartpi",
        description="HeartPi heart-sound screening aid (not a diagnostic device).")
    parser.add_argument("--version", action="version", version=f"heartpi {__version__}")
    parser.add_argument("--config", help="configuration file (default: $HEARTPI_CONFIG or "
                        "/etc/heartpi/heartpi.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("analyze", help="signal figures of WAV files (duration, quality, heart rate)")
    p.add_argument("files", nargs="+", metavar="FILE.wav")
    p.set_defaults(func=cmd_analyze)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


#: Subcommand registrars added by later modules (kept in one list so the parser is built once).
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
