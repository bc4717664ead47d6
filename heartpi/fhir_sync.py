"""Keep the region's FHIR server up to date: ``heartpi fhir-sync``, run every hour by
``heartpi-fhir-sync.timer`` once a technician has set ``fhir.server_url``.

``heartpi export --send`` sends what a technician selects, whenever they think of it; in a clinic
that means records reach the central store late or never. This sends, unattended, only what
changed since the last send that went through: every recording carries the number of its last
change (``device.records``, schema 10, kept by the database's triggers: made, assigned,
re-dated, given a finding or a place, its patient edited), and each server remembers the number
it has everything up to. That number moves after every transaction the server accepted, so a
link that drops part-way costs only the transaction in flight, and the next run picks up there.
A recording that changes while a send runs gets a newer number and goes next time. Sending a
record twice is harmless (the transaction PUTs fixed ids), so nothing here needs to be exact
about what the server holds, only never to skip a change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from heartpi.fhir_send import FhirSendError, SendReport, post_transaction, send, server_host, tls_context

#: The token's systemd credential (heartpi-fhir-sync.service loads it from :data:`TOKEN_FILE`):
#: only that service's process can read it, not the web page's.
TOKEN_CREDENTIAL = "fhir-token"
#: Where a technician puts the server's access token (root-only; README, "Everyday servicing").
TOKEN_FILE = Path("/etc/heartpi/fhir-token")
#: What the service's credential holds when :data:`TOKEN_FILE` does not exist (its unit's
#: ``SetCredential=``, the default systemd falls back to; it takes no empty value).
NO_TOKEN = "none"
#: Who the audit log names for an unattended send.
ACTOR = "fhir-sync"


@dataclass
class SyncReport:
    """One run: what was waiting, what the server answered (None: nothing was waiting), and how
    many deletions it did."""

    server: str
    waiting: int
    sent: Optional[SendReport] = None
    deleted: int = 0  #: resources the server was asked to delete, and did

    @property
    def host(self) -> str:
        return server_host(self.server)


def read_token(explicit: Optional[Path] = None, *, environ: Optional[Mapping[str, str]] = None,
               default_file: Path = TOKEN_FILE) -> str:
    """The server's access token: ``explicit`` (``--token-file``), else the service's systemd
    credential, else :data:`TOKEN_FILE` when it exists; '' when there is none (a server on the
    clinic's own network may take records without one). FhirSendError when a file named or
    present cannot be read."""
    environ = os.environ if environ is None else environ
    if explicit:
        return _read_token_file(explicit, required=True) or ""
    if environ.get("CREDENTIALS_DIRECTORY"):
        credential = _read_token_file(Path(environ["CREDENTIALS_DIRECTORY"]) / TOKEN_CREDENTIAL, required=False)
        if credential is not None:
            return "" if credential == NO_TOKEN else credential
    return _read_token_file(default_file, required=False) or ""


def _read_token_file(path: Path, *, required: bool) -> Optional[str]:
    """The file's token, stripped; None when it does not exist and need not."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if required:
            raise FhirSendError(f"the token file {path} does not exist") from None
        return None
    except OSError as exc:
        raise FhirSendError(f"the token file {path} could not be read ({exc.strerror or exc}); run as "
                            "root (sudo), or let heartpi-fhir-sync.service send") from None


def sync(store, config, *, token_file: Optional[Path] = None, everything: bool = False,
         progress: Optional[Callable[[SendReport], None]] = None) -> SyncReport:
    """Send ``config.fhir.server_url`` the recordings that changed since the last send that went
    through (``everything``: all of them again), remembering after each accepted transaction how
    far the server is; then the deletions it has not done (:func:`_send_deletions`). The token as
    :func:`read_token` finds it (``token_file``: ``--token-file``). Audited when something was
    sent or a send failed, the token unreadable among them; FhirSendError (its message saying
    what to mend, and how many went before) on a failure."""
    from webui.exporting import to_fhir_transaction

    url = config.fhir.server_url
    if not url:
        raise FhirSendError("no FHIR server is set: put its base address in fhir.server_url "
                            "(/etc/heartpi/heartpi.toml)")
    through = 0 if everything else store.fhir_sent_through(url)[0]
    waiting = store.changed_recordings(through)
    report = SyncReport(server=url, waiting=len(waiting))
    newest = max((rec.changed_seq for rec in waiting), default=0)
    unsent = {rec.id: rec.changed_seq for rec in waiting}

    def make_bundle(group):
        return to_fhir_transaction(store, group, device_id=config.device_id, recordings_dir=config.recordings_dir,
                                   include_audio=config.fhir.include_audio)

    def accepted(group) -> None:
        for rec in group:
            unsent.pop(rec.id)
        # everything below the oldest change still unsent has arrived
        store.mark_fhir_sent(url, min(unsent.values()) - 1 if unsent else newest)

    what = "all records" if everything else "changes"
    ca_file = config.fhir.ca_path
    try:
        token = read_token(token_file)
        if waiting:
            report.sent = send(waiting, make_bundle, url, token=token, ca_file=ca_file, batch=config.fhir.batch,
                               progress=progress, accepted=accepted)
        # after the records: a deleted patient's recordings kept on the device must first stop naming them
        report.deleted = _send_deletions(store, config.device_id, url, token=token, ca_file=ca_file)
    except FhirSendError as exc:
        _audit_sent(store, report, what)  # the records that went before the deletions failed
        _audit_failure(store, f"{what} to {report.host}: {exc}")
        raise
    _audit_sent(store, report, what)
    return report


def _audit_sent(store, report: SyncReport, what: str) -> None:
    """The audit entry of what the server took, if it took anything."""
    from webui.exporting import FHIR_SENT

    if report.sent or report.deleted:
        sent = report.sent or SendReport()
        store.audit(ACTOR, FHIR_SENT, "", f"{what} to {report.host}: {sent.recordings} recordings, "
                    f"{sent.created} resources created, {sent.updated} updated, {report.deleted} deleted")


def _audit_failure(store, detail: str) -> None:
    """Audit a failed send, unless the last send's outcome was this very failure: a clinic offline
    for a month would otherwise add one identical entry an hour. The Device page then shows when
    the failing began; the journal keeps every attempt."""
    from webui.exporting import FHIR_SEND_FAILED, fhir_outcomes

    failed = fhir_outcomes(store)[1]
    if failed and failed["actor"] == ACTOR and failed["detail"] == detail:
        return
    store.audit(ACTOR, FHIR_SEND_FAILED, "", detail)


#: Deletions per transaction: a few hundred bytes each.
DELETIONS_PER_TRANSACTION = 100


def _send_deletions(store, device_id: str, url: str, *, token: str, ca_file: Optional[Path]) -> int:
    """DELETE on the server what was deleted on the device (``device.records``, schema 11) and
    the server has not deleted yet; how many. A deletion whose resource the device holds again
    is void (its number was given anew: the send before this one put the new one there)."""
    from webui.exporting import on_device, to_fhir_deletions

    pending = store.fhir_deletions(url)
    void = {i for i, resource in pending if on_device(store, resource)}
    if void:
        store.mark_fhir_deleted(url, sorted(void))
    due = [(i, resource) for i, resource in pending if i not in void]
    if not due:
        return 0
    context = tls_context(url, ca_file)
    for start in range(0, len(due), DELETIONS_PER_TRANSACTION):
        chunk = due[start:start + DELETIONS_PER_TRANSACTION]
        try:
            post_transaction(url, to_fhir_deletions([r for _, r in chunk], device_id=device_id), token=token,
                             context=context)
        except FhirSendError as exc:
            raise FhirSendError(f"records deleted on this device are not deleted on the server yet ({start} of "
                                f"{len(due)} deletions done): {exc}") from None
        store.mark_fhir_deleted(url, [i for i, _ in chunk])
    return len(due)
