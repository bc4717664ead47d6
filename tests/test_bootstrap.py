"""tools/bootstrap.sh and tools/install-pi.sh stop with a plain message when the disk cannot
hold what they install (tools/need-space.sh), before they change anything.

A full disk once failed CI as a bare "ensurepip ... returned non-zero exit status 1" from
``python -m venv``; on a device, an update that fills the SD card would leave half a venv. The
scripts run here for real (bash, their own free-space arithmetic) in a copy of the repository's
top level, with ``df``, ``dpkg-query`` and the Python they call replaced by small scripts, so
nothing is installed and the free space is whatever a test says.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files bootstrap.sh reads, and stand-ins for the commands it asks about the machine."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    for script in ("bootstrap.sh", "need-space.sh", "install-pi.sh"):
        shutil.copy(ROOT / "tools" / script, repo / "tools")
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy(ROOT / name, repo)
    (repo / "dsp").mkdir()
    (repo / "dsp" / "__init__.py").write_text("")
    fake = tmp_path / "bin"
    fake.mkdir()
    _script(fake / "dpkg-query", 'echo "install ok installed"\n')
    # POSIX df -Pk: a header, then one line whose fourth field is the free space in KB
    _script(fake / "df", '[ -n "$FAKE_FREE_KB" ] || exit 1\n'
                         'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
                         'echo "/dev/vda 263000000 1 $FAKE_FREE_KB 99% /"\n')
    # the version check reads a script from stdin; anything else is an install we only record
    _script(fake / "python", 'if [ "$1" = "-" ]; then cat >/dev/null; exit 0; fi\n'
                             'echo "$@" >> "$CALLS"; exit 3\n')
    return repo


def _run(repo: Path, free_mb: int | None, script: str, *args: str) -> subprocess.CompletedProcess:
    fake = repo.parent / "bin"
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", PYTHON=str(fake / "python"),
               CALLS=str(repo.parent / "calls"),
               FAKE_FREE_KB="" if free_mb is None else str(free_mb * 1024))
    return subprocess.run(["bash", str(repo / "tools" / script), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _bootstrap(repo: Path, mode: str, free_mb: int | None) -> subprocess.CompletedProcess:
    return _run(repo, free_mb, "bootstrap.sh", mode)


def _calls(repo: Path) -> str:
    calls = repo.parent / "calls"
    return calls.read_text() if calls.exists() else ""


@pytest.mark.parametrize("mode, need_mb", [("test", 3000), ("run", 1000)])
def test_a_new_venv_on_a_nearly_full_disk_stops_before_venv_with_the_space_it_needs(
        checkout: Path, mode: str, need_mb: int) -> None:
    done = _bootstrap(checkout, mode, free_mb=173)
    assert done.returncode == 1
    assert f"only 173 MB free on /; installing the Python packages into a new .venv needs about " \
           f"{need_mb} MB" in done.stderr
    assert "Free some space" in done.stderr
    assert "ensurepip" not in done.stderr
    assert not (checkout / ".venv").exists()
    assert _calls(checkout) == ""


def test_with_room_enough_the_install_goes_ahead(checkout: Path) -> None:
    done = _bootstrap(checkout, "test", free_mb=3000)
    assert done.returncode == 3  # the stand-in Python's "venv" fails: we only want to see it asked
    assert _calls(checkout).splitlines() == ["-m venv .venv"]
    assert "MB free" not in done.stderr


def test_an_unreadable_df_lets_the_install_try(checkout: Path) -> None:
    done = _bootstrap(checkout, "run", free_mb=None)
    assert _calls(checkout).splitlines() == ["-m venv .venv"]
    assert "MB free" not in done.stderr


def test_updating_an_existing_venv_asks_for_less_room_than_a_new_one(checkout: Path) -> None:
    bin_dir = checkout / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    _script(bin_dir / "python", "exit 0\n")
    _script(bin_dir / "pip", 'echo "pip $@" >> "$CALLS"; exit 4\n')

    low = _bootstrap(checkout, "test", free_mb=200)
    assert low.returncode == 1
    assert "only 200 MB free on /; installing updates to the Python packages in .venv needs about " \
           "300 MB" in low.stderr
    assert _calls(checkout) == ""

    enough = _bootstrap(checkout, "test", free_mb=500)  # far below a new venv's 3000 MB
    assert enough.returncode == 4
    assert _calls(checkout).startswith("pip install")


@pytest.mark.parametrize("update, need_mb, what", [(False, 1000, "HeartPi"), (True, 400, "this update of HeartPi")])
def test_the_device_install_leaves_a_nearly_full_sd_card_as_it_was(checkout: Path, update: bool, need_mb: int,
                                                                   what: str) -> None:
    """install-pi.sh on a card the recordings have filled: it stops before venv or pip, says how
    to make room without losing records, and the installed HeartPi (on an update) is untouched."""
    root = checkout.parent / "root"
    venv = root / "opt" / "heartpi" / "venv"
    if update:
        (venv / "bin").mkdir(parents=True)
        _script(venv / "bin" / "python", "exit 0\n")
        _script(venv / "bin" / "pip", 'echo "pip $@" >> "$CALLS"; exit 4\n')
    (checkout / "heartpi").mkdir()
    (checkout / "heartpi" / "__init__.py").write_text('__version__ = "9.9"\n')
    (checkout / "README.md").write_text("HeartPi\n")
    done = _run(checkout, 150, "install-pi.sh", "--prefix", str(root), "--no-apt", "--no-systemd")
    assert done.returncode == 1
    assert f"install-pi: only 150 MB free on /; installing {what} needs about {need_mb} MB" in done.stderr
    assert "'heartpi export', then 'heartpi prune --before YYYY-MM-DD'" in done.stderr
    assert _calls(checkout) == ""  # neither pip nor a new venv
    assert venv.exists() == update and not (root / "opt" / "heartpi" / "README.md").exists()
