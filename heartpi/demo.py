"""``heartpi demo``: the whole product on one machine without hardware.

Starts the clinic web page and the simulated device side by side on one data folder,
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


def run_demo(*, host: str = "127.0.0.1", port: int = 8080, presses: int = 4, once: bool = False,
             data_dir: Optional[Path] = None) -> int:
    from device.config import load_config
    from device.records import RecordStore
    from device.runner import run_daemon
    from webui import create_app
    from webui.passwords import hash_password
    from webui.serve import make_server, url_of

    data_dir = Path(data_dir or os.environ.get("HEARTPI_DATA_DIR") or Path.cwd() / "var" / "demo").resolve()
    env = dict(os.environ, HEARTPI_DATA_DIR=str(data_dir))
    config = load_config(os.environ.get("HEARTPI_CONFIG") or None, env=env)
    store = RecordStore(config.database_path)
    password = secrets.token_urlsafe(12)
    existing = store.user_by_email(DEMO_ADMIN)
    if existing:
        store.update_user(existing["id"], actor="demo", audit_action="user.password_reset",
                          password_hash=hash_password(password), failed_logins=0, locked_until=None)
    else:
        store.add_user(email=DEMO_ADMIN, password_hash=hash_password(password), role="admin", actor="demo")
    store.close()

    app = create_app({"HEARTPI_CONFIG": config})
    server = make_server(app, host, port)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="web", daemon=True)
    thread.start()
    url = url_of(host, port, False)
    print(f"""
HeartPi demo (simulated device, no hardware needed). Screening aid, not a diagnosis.
  Web page:  {url}
  Log in as: {DEMO_ADMIN}
  Password:  {password}   (random, shown once; a new one is made at each start)
  Data:      {data_dir}
""", flush=True)
    try:
        return run_daemon(config, simulate=True, presses=presses, realtime=0.0 if once else 4.0,
                          keep_running=not once,
                          interactive=sys.stdin.isatty())
    finally:
        server.stop()
