"""Production WSGI serving with cheroot (pure Python, TLS built in): ``heartpi web``."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Optional

log = logging.getLogger("heartpi.web")


def make_server(app, host: str, port: int, *, tls_cert: str = "", tls_key: str = "", threads: int = 4):
    from cheroot import wsgi

    from .errors import SetupError

    server = wsgi.Server((host, port), app, numthreads=threads, server_name="heartpi")
    if tls_cert:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        try:
            server.ssl_adapter = BuiltinSSLAdapter(tls_cert, tls_key)
        except (OSError, ValueError) as exc:
            raise SetupError(f"TLS certificate or key cannot be used ({exc}); run 'heartpi provision' "
                             "again or fix web.tls_cert / web.tls_key") from None
    return server


def url_of(host: str, port: int, tls: bool) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def serve(app, host: str, port: int, *, tls_cert: str = "", tls_key: str = "",
          ready: Optional[threading.Event] = None, install_signals: bool = True) -> None:
    """Serve until SIGTERM/SIGINT (or ``server.stop()``)."""
    server = make_server(app, host, port, tls_cert=tls_cert, tls_key=tls_key)
    if install_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: threading.Thread(target=server.stop).start())
    server.prepare()
    log.info("web page at %s", url_of(host, port, bool(tls_cert)))
    if ready:
        ready.set()
    server.serve()
