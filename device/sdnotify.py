"""systemd notification protocol (sd_notify): one datagram, no dependency needed.

Does nothing when not started by systemd (no ``NOTIFY_SOCKET``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping, Optional

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        watchdog_for_us = not pid or pid == str(os.getpid())
        #: seconds between watchdog pings (half the systemd timeout), or None
        self.watchdog_interval = int(usec) / 2e6 if usec and watchdog_for_us and usec.isdigit() else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        if not self.address:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall("\n".join(fields).encode())
            return True
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *( [f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")
