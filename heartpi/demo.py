"""``heartpi demo``: the whole product on one machine, with or without the hardware.

On a HeartPi (GPIO and a sound card) it runs the real device; anywhere else a simulated one.
Starts the clinic web page and the device side by side on one data folder,
creates a demo administrator with a random password printed once, plays the bundled
reference recordings through the virtual button, then keeps running (Enter presses the
button again) until Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Optional

DEMO_ADMIN = "admin@heartpi.local"
GPIO_CHIP = Path("/dev/gpiochip0")


def hardware_present(config, gpio_chip: Path = GPIO_CHIP) -> tuple[bool, str]:
    """Is this a real HeartPi (GPIO header and a sound card to record from)? Checked at run
    time only, never at import."""
    if not gpio_chip.exists():
        return False, f"no GPIO ({gpio_chip} missing)"
    from device.capture import PyAudioSource
    from device.errors import SoundCardError

    source = PyAudioSource(config.audio.card, config.audio.sample_rate)
    try:
        source.open()
    except SoundCardError as exc:
        return False, str(exc)
    finally:
        source.close()
    return True, f"GPIO and sound card {source.name!r}"


def run_demo(*, host: str = "127.0.0.1", port: int = 8080, presses: int = 4, once: bool = False,
             data_dir: Optional[Path] = None, simulate: Optional[bool] = None) -> int:
    from device.backup import data_dir_in_use
    from device.config import load_config

    data_dir = Path(data_dir or os.environ.get("HEARTPI_DATA_DIR") or Path.cwd() / "var" / "demo").resolve()
    env = dict(os.environ, HEARTPI_DATA_DIR=str(data_dir))
    config = load_config(os.environ.get("HEARTPI_CONFIG") or None, env=env)
    with data_dir_in_use(config):
        return _run_demo(config, host=host, port=port, presses=presses, once=once, data_dir=data_dir,
                         simulate=simulate)


def _run_demo(config, *, host: str, port: int, presses: int, once: bool, data_dir: Path,
              simulate: Optional[bool]) -> int:
    from device.records import RecordStore
    from device.runner import run_daemon
    from webui import create_app
    from webui.passwords import hash_password
    from webui.serve import make_server, url_of

    store = RecordStore(config.database_path)
    password = secrets.token_urlsafe(12)
    existing = store.user_by_email(DEMO_ADMIN)
    if existing:
        store.update_user(existing["id"], actor="demo", audit_action="user.password_reset",
                          password_hash=hash_password(password), failed_logins=0, locked_until=None)
    else:
        store.add_user(email=DEMO_ADMIN, password_hash=hash_password(password), role="admin", actor="demo")
    store.close()

    if simulate is None:
        real, why = hardware_present(config)
        simulate = not real
    else:
        why = "chosen on the command line"
    app = create_app({"HEARTPI_CONFIG": config})
    server = make_server(app, host, port)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="web", daemon=True)
    thread.start()
    url = url_of(host, port, False)
    mode = "simulated device" if simulate else "real device"
    print(f"""
HeartPi ({mode}: {why}). Screening aid, not a diagnosis.
  Web page:  {url}
  Log in as: {DEMO_ADMIN}
  Password:  {password}   (random, shown once; a new one is made at each start)
  Data:      {data_dir}
""", flush=True)
    try:
        if not simulate:
            return run_daemon(config)
        return run_daemon(config, simulate=True, presses=presses, realtime=0.0 if once else 4.0,
                          keep_running=not once, interactive=sys.stdin.isatty())
    finally:
        server.stop()
