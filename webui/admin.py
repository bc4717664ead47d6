"""Administration: accounts, self-registration, and the device status page."""

from __future__ import annotations

import json
import secrets
import shutil

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from device.records import ROLES

from . import get_config, get_store
from .auth import actor, roles_required
from .passwords import hash_password

bp = Blueprint("admin", __name__)


def temporary_password() -> str:
    return secrets.token_urlsafe(12)


@bp.route("/admin/users", methods=["GET", "POST"])
@roles_required("admin")
def users():
    store = get_store()
    created = None
    if request.method == "POST":
        email = request.form.get("email", "").strip()
        role = request.form.get("role", "")
        if "@" not in email or role not in ROLES:
            flash("Enter an email address and choose a role.", "error")
        else:
            password = temporary_password()
            try:
                store.add_user(email=email, password_hash=hash_password(password), role=role, actor=actor())
                created = (email, password)
            except ValueError as exc:
                flash(str(exc), "error")
    return render_template("admin_users.html", users=store.list_users(), roles=ROLES, created=created,
                           registration=store.get_setting("self_registration") == "on")


@bp.route("/admin/users/<int:user_id>", methods=["POST"])
@roles_required("admin")
def update_user(user_id: int):
    store = get_store()
    target = store.get_user(user_id)
    if target is None:
        abort(404)
    action = request.form.get("action", "")
    last_admin = target["role"] == "admin" and target["active"] and store.count_admins() <= 1
    reset = None
    if action == "approve":
        store.update_user(user_id, actor=actor(), audit_action="user.approve", approved=1)
    elif action in ("disable", "enable"):
        if action == "disable" and last_admin:
            flash("The last administrator cannot be disabled.", "error")
        else:
            store.update_user(user_id, actor=actor(), audit_action=f"user.{action}", active=int(action == "enable"))
            if action == "disable":
                store.end_user_sessions(user_id)
    elif action == "role":
        role = request.form.get("role", "")
        if role not in ROLES:
            abort(400, description="Unknown role.")
        if last_admin and role != "admin":
            flash("The last administrator must stay an administrator.", "error")
        else:
            store.update_user(user_id, actor=actor(), audit_action="user.role", role=role)
    elif action == "reset":
        reset = temporary_password()
        store.update_user(user_id, actor=actor(), audit_action="user.password_reset",
                          password_hash=hash_password(reset), failed_logins=0, locked_until=None)
        store.end_user_sessions(user_id)
    else:
        abort(400, description="Unknown action.")
    if reset:
        return render_template("admin_users.html", users=store.list_users(), roles=ROLES,
                               created=(target["email"], reset),
                               registration=store.get_setting("self_registration") == "on")
    return redirect(url_for("admin.users"), code=303)


@bp.route("/admin/settings", methods=["POST"])
@roles_required("admin")
def settings():
    value = "on" if request.form.get("self_registration") == "on" else "off"
    get_store().set_setting("self_registration", value, actor=actor())
    flash(f"Self-registration is now {value}.", "ok")
    return redirect(url_for("admin.users"), code=303)


@bp.route("/device")
@roles_required("admin", "clinician", "health_worker")
def device():
    from model import software_version
    from model.classifier import DEFAULT_MODEL, metadata_path

    config = get_config()
    store = get_store()
    model_path = str(config.model_file or DEFAULT_MODEL)
    try:
        meta = json.loads(metadata_path(model_path).read_text())
    except (OSError, ValueError):
        meta = {}
    usage = shutil.disk_usage(config.data_dir if config.data_dir.exists() else "/")
    return render_template("device.html", config=config, software=software_version(), model=meta,
                           model_path=model_path, free_mb=usage.free / 1e6, total_mb=usage.total / 1e6,
                           status=store.status(), recordings=store.list_recordings(limit=10),
                           n_recordings=store.count_recordings())
