"""HeartPi clinic web page: Flask app factory ``create_app(test_config=None)``.

Reads and writes only the records store (``device.records``) and runs the same classifier
as the device for uploads; it never talks to the daemon.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

from flask import Flask, g, render_template, request

from device.sites import SITES, site_label
from device.records import POOR_SIGNALS_TO_REFER, ended_unjudged
from model.verdict import verdict_caution

from .errors import SetupError, WebError

log = logging.getLogger("heartpi.web")

__all__ = ["WebError", "SetupError", "create_app"]


def _secret_key(path: Path) -> bytes:
    """Load the session signing key, creating it (mode 0600) on first start."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return key
    except FileExistsError:
        return path.read_bytes()
    except OSError as exc:
        raise SetupError(f"cannot create the session key {path}: {exc.strerror}") from None


def create_app(test_config: Optional[Mapping[str, Any]] = None) -> Flask:
    """Build the app. ``test_config`` may hold Flask settings and ``HEARTPI_CONFIG`` (a
    :class:`device.config.Config`); otherwise the device configuration is loaded."""
    from device.config import load_config
    from device.records import RecordStore

    app = Flask(__name__)
    test_config = dict(test_config or {})
    config = test_config.pop("HEARTPI_CONFIG", None) or load_config()
    tls = bool(config.web.tls_cert)
    app.config.from_mapping(
        SECRET_KEY=_secret_key(config.secret_key_path),
        MAX_CONTENT_LENGTH=config.web.max_upload_mb * 1024 * 1024,
        SESSION_COOKIE_NAME="__Host-heartpi" if tls else "heartpi_session",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=int(config.web.session_hours * 3600),
        LOGIN_FAILURES_PER_ACCOUNT=5,
        LOGIN_FAILURES_PER_CLIENT=20,
        LOCKOUT_SECONDS=15 * 60,
    )
    app.config.update(test_config)
    app.extensions["heartpi_config"] = config
    app.extensions["heartpi_store"] = RecordStore(config.database_path)
    app.extensions["heartpi_classifier"] = None
    app.extensions["heartpi_classifier_lock"] = threading.Lock()

    from . import admin, auth, exports, guide, patients, recordings
    from .paging import args_for_page

    app.jinja_env.globals["args_for_page"] = args_for_page

    auth.init_app(app)
    for module in (auth, recordings, patients, exports, admin, guide):
        app.register_blueprint(module.bp)
    app.add_url_rule("/", endpoint="index", view_func=recordings.index)

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if tls:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def error_page(status: int, title: str, message: str):
        return render_template("error.html", title=title, message=message), status

    app.register_error_handler(400, lambda e: error_page(400, "Bad request", e.description))
    app.register_error_handler(403, lambda e: error_page(403, "Not allowed",
                                                         "Your account's role does not allow this page."))
    app.register_error_handler(404, lambda e: error_page(404, "Not found", "There is nothing at this address."))
    app.register_error_handler(413, lambda e: error_page(
        413, "File too large", f"Uploads are limited to {config.web.max_upload_mb} MB. "
        "A 20-second WAV recording is well under 5 MB: trim or re-export the file."))
    app.register_error_handler(429, lambda e: error_page(429, "Too many attempts", e.description))

    clinic = config.clinic_time
    app.jinja_env.filters["when"] = clinic.text  # stored UTC instants, shown as the clinic's clocks read
    app.jinja_env.globals["clinic_zone"] = clinic.name
    app.jinja_env.filters["site_label"] = site_label
    app.jinja_env.globals["verdict_caution"] = verdict_caution  # the caution marks of lists (_verdict.html)
    app.jinja_env.globals["ended_unjudged"] = ended_unjudged  # and the "could not judge: refer" mark
    app.jinja_env.globals["poor_signals_to_refer"] = POOR_SIGNALS_TO_REFER  # the guide and Device page say the rule

    @app.context_processor
    def inject():
        from model import DISCLAIMER

        server = get_config().fhir.server_url  # where deletions go too (heartpi-fhir-sync)
        return {"disclaimer": DISCLAIMER, "device_id": config.device_id, "user": g.get("user"),
                "sites": SITES.values(), "fhir_server": urlsplit(server).netloc if server else ""}

    return app


def get_store():
    from flask import current_app

    return current_app.extensions["heartpi_store"]


def get_config():
    from flask import current_app

    return current_app.extensions["heartpi_config"]


def classify(samples, rate):
    """Classify with the app's single classifier (the TFLite interpreter is not thread-safe)."""
    from flask import current_app

    from model import Classifier

    ext = current_app.extensions
    with ext["heartpi_classifier_lock"]:
        if ext["heartpi_classifier"] is None:
            ext["heartpi_classifier"] = Classifier.load(get_config().model_file,
                                                         calibration=get_config().calibration_file)
        return ext["heartpi_classifier"].classify(samples, rate)
