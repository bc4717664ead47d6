"""Accounts, server-side sessions, CSRF, login throttling and role checks.

* Sessions: the signed cookie holds only a random session id; the row in ``web_sessions``
  is the truth, so logout and password changes end sessions on the server.
* CSRF: a per-session token, required on *every* non-GET request by a ``before_request``
  hook (no route can forget it).
* Login: unknown email and wrong password give the same page and cost one argon2
  verification each; 5 failures lock an account for 15 minutes, and a client address is
  throttled after 20 failures.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque

from flask import (Blueprint, abort, current_app, flash, g, redirect, render_template, request,
                   session, url_for)

from device.records import ROLES, utcnow

from . import get_config, get_store
from .passwords import hash_password, password_problem, verify_password

bp = Blueprint("auth", __name__)
PUBLIC_ENDPOINTS = {"auth.login", "auth.register", "static"}
GENERIC_LOGIN_ERROR = "Wrong email or password."

_client_failures: dict[str, deque] = defaultdict(deque)
_client_lock = threading.Lock()


def init_app(app) -> None:
    app.before_request(load_user)
    app.before_request(csrf_protect)
    app.jinja_env.globals["csrf_token"] = csrf_token


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_protect():
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent, expected):
        abort(400, description="The form expired or was sent from another page (CSRF check "
                               "failed). Reload the page and try again.")
    return None


def load_user():
    g.user = None
    sid = session.get("sid")
    if sid:
        g.user = get_store().session_user(sid)
        if g.user is None:
            session.pop("sid", None)
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS and request.endpoint is not None:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?") if request.method == "GET" else None))
    return None


def roles_required(*roles: str):
    """Allow only these roles (403 for the others)."""
    for role in roles:
        assert role in ROLES, role

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if g.user is None:
                return redirect(url_for("auth.login"))
            if g.user["role"] not in roles:
                abort(403)
            return view(*args, **kwargs)
        wrapped.roles = roles
        return wrapped
    return decorate


def actor() -> str:
    return f"user:{g.user['id']}:{g.user['email']}" if g.get("user") else "anonymous"


def _client_throttled(address: str) -> bool:
    limit = current_app.config["LOGIN_FAILURES_PER_CLIENT"]
    window = current_app.config["LOCKOUT_SECONDS"]
    now = time.monotonic()
    with _client_lock:
        failures = _client_failures[address]
        while failures and now - failures[0] > window:
            failures.popleft()
        return len(failures) >= limit


def _client_failed(address: str) -> None:
    with _client_lock:
        _client_failures[address].append(time.monotonic())


def _start_session(user: dict) -> None:
    store = get_store()
    session.clear()
    sid = secrets.token_urlsafe(32)
    hours = get_config().web.session_hours
    expires = (_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=hours)).isoformat(timespec="seconds")
    store.create_session(sid, user["id"], expires)
    session["sid"] = sid
    session.permanent = True
    csrf_token()


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if g.user:
            return redirect(url_for("index"))
        return render_template("login.html", registration=get_store().get_setting("self_registration") == "on")
    store = get_store()
    address = request.remote_addr or "?"
    if _client_throttled(address):
        abort(429, description="Too many failed logins from this device. Wait 15 minutes and try again.")
    email = request.form.get("email", "").strip()
    password = request.form.get("password", "")
    user = store.user_by_email(email) if email else None
    ok = verify_password(user["password_hash"] if user else None, password)
    now = utcnow()
    locked = bool(user and user["locked_until"] and user["locked_until"] > now)
    if ok and user and not locked and user["active"] and user["approved"]:
        store.update_user(user["id"], actor=f"user:{user['id']}", audit_action="",
                          failed_logins=0, locked_until=None)
        store.audit(f"user:{user['id']}:{user['email']}", "login", f"user:{user['id']}", address)
        _start_session(user)
        target = request.args.get("next") or ""
        return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("index"))
    _client_failed(address)
    if user and not ok:
        failures = user["failed_logins"] + 1
        fields = {"failed_logins": failures}
        if failures >= current_app.config["LOGIN_FAILURES_PER_ACCOUNT"]:
            until = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=current_app.config["LOCKOUT_SECONDS"])
            fields.update(locked_until=until.isoformat(timespec="seconds"), failed_logins=0)
        store.update_user(user["id"], actor="anonymous", audit_action="", **fields)
    store.audit("anonymous", "login.failed", "", f"{address}")
    # Same words and status whether the email exists, the password is wrong, or the account
    # is locked, pending or disabled: nothing tells an attacker which accounts exist.
    return render_template("login.html", error=GENERIC_LOGIN_ERROR, email=email,
                           registration=store.get_setting("self_registration") == "on"), 401


@bp.route("/logout", methods=["POST"])
def logout():
    sid = session.get("sid")
    if sid:
        get_store().end_session(sid)
        get_store().audit(actor(), "logout")
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
def change_password():
    if request.method == "POST":
        store = get_store()
        current = request.form.get("current", "")
        new = request.form.get("new", "")
        problem = password_problem(new)
        if not verify_password(g.user["password_hash"], current):
            flash("The current password is wrong.", "error")
        elif new != request.form.get("confirm", ""):
            flash("The two new passwords differ.", "error")
        elif problem:
            flash(problem.capitalize() + ".", "error")
        else:
            store.update_user(g.user["id"], actor=actor(), audit_action="user.password_change",
                              password_hash=hash_password(new))
            store.end_user_sessions(g.user["id"])
            _start_session(store.get_user(g.user["id"]))
            flash("Password changed. Other devices have been logged out.", "ok")
            return redirect(url_for("index"))
    return render_template("password.html")


@bp.route("/register", methods=["GET", "POST"])
def register():
    store = get_store()
    if store.get_setting("self_registration") != "on":
        abort(404)
    if request.method == "POST":
        email = request.form.get("email", "").strip()
        password = request.form.get("password", "")
        problem = password_problem(password)
        if "@" not in email:
            flash("Enter a valid email address.", "error")
        elif problem:
            flash(problem.capitalize() + ".", "error")
        else:
            try:
                store.add_user(email=email, password_hash=hash_password(password), role="health_worker",
                               approved=False, actor="self-registration")
            except ValueError:
                pass  # same answer as a new account: no enumeration through registration
            flash("Thank you. An administrator must approve your account before you can log in.", "ok")
            return redirect(url_for("auth.login"))
    return render_template("register.html")
