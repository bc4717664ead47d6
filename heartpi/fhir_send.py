"""Send records to a FHIR server: ``heartpi export --format fhir-transaction --send URL``.

A technician's step, run when the clinic's network reaches the region's FHIR server (HeartPi
itself needs no network). The records go as transaction Bundles (``webui.exporting.
to_fhir_transaction``) POSTed to the server's base URL, a few visits at a time, so one request
stays small enough for a slow link and a server's size limit, and a failure part-way loses
nothing: a transaction is all or nothing on the server, the resources' ids are fixed, and
sending everything again fills in what did not arrive without copying what did.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

#: Recordings per transaction: a 20 s recording at a USB card's 48 kHz is 1.9 MB of WAV, 2.6 MB in
#: the base64 of FHIR JSON, so five make a request of about 13 MB: one a slow clinic link finishes
#: in minutes, and a failed one costs little to send again.
DEFAULT_BATCH = 5
TIMEOUT_S = 120.0


class FhirSendError(Exception):
    """The server could not be reached or refused the records; the message says what to check."""


@dataclass
class SendReport:
    """What the server answered, summed over the transactions sent."""

    transactions: int = 0
    recordings: int = 0
    created: int = 0  #: resources the server had not held (HTTP 201 in its response)
    updated: int = 0  #: resources it held and replaced (200)
    statuses: dict[str, int] = field(default_factory=dict)  #: every entry status, as the server wrote it

    @property
    def other_statuses(self) -> dict[str, int]:
        """The entry statuses that are neither created nor updated: something to look at."""
        return {k: v for k, v in self.statuses.items() if not k.startswith(("200", "201"))}


def batches(recordings: Sequence, size: int) -> list[list]:
    """The recordings in groups of about ``size``, a visit's recordings always in the same group
    (its Encounter is sent once with all of them); the order is kept."""
    if size < 1:
        raise ValueError("a batch holds at least one recording")
    groups: dict[object, list] = {}
    for rec in recordings:
        groups.setdefault(rec.visit or ("recording", rec.id), []).append(rec)
    out: list[list] = []
    for group in groups.values():
        if not out or (out[-1] and len(out[-1]) + len(group) > size):
            out.append([])
        out[-1].extend(group)
    return [batch for batch in out if batch]


def _outcome_text(body: bytes) -> str:
    """The diagnostics of a FHIR OperationOutcome, or the start of whatever else came back."""
    try:
        outcome = json.loads(body)
        issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
        text = "; ".join(filter(None, (i.get("diagnostics") or (i.get("details") or {}).get("text")
                                       for i in issues if isinstance(i, dict))))
        if text:
            return text
    except ValueError:
        pass
    return body[:300].decode("utf-8", "replace").strip() or "no explanation given"


def post_transaction(url: str, bundle: dict, *, token: str = "", context: Optional[ssl.SSLContext] = None,
                     timeout: float = TIMEOUT_S) -> dict:
    """POST one transaction Bundle to the server's base ``url``; its transaction-response Bundle."""
    answer = _exchange(url, url, json.dumps(bundle).encode(), token=token, context=context, timeout=timeout)
    if not (answer.get("resourceType") == "Bundle" and answer.get("type") == "transaction-response"):
        raise FhirSendError(f"{server_host(url)} answered without a transaction response: is {url} the server's base "
                            "address (for HAPI FHIR, ending in /fhir)?")
    return answer


def capability_statement(url: str, *, token: str = "", context: Optional[ssl.SSLContext] = None,
                         timeout: float = 15.0) -> dict:
    """The server's CapabilityStatement (``GET [base]/metadata``): that the address, the network
    and the certificate reach a FHIR server, without sending it anything (``heartpi selftest``)."""
    answer = _exchange(url, url.rstrip("/") + "/metadata", None, token=token, context=context, timeout=timeout)
    if answer.get("resourceType") != "CapabilityStatement":
        raise FhirSendError(f"{server_host(url)} answered without a CapabilityStatement: is {url} the server's base "
                            "address (for HAPI FHIR, ending in /fhir)?")
    return answer


def server_host(url: str) -> str:
    """The part of a server's address a technician recognises, for messages and the audit log."""
    return urllib.parse.urlsplit(url).netloc or url


def _exchange(url: str, target: str, body: Optional[bytes], *, token: str, context: Optional[ssl.SSLContext],
              timeout: float) -> dict:
    """POST ``body`` to ``target`` (GET without one) on the server at base ``url``; the JSON object
    it answered, or FhirSendError saying what to check."""
    request = urllib.request.Request(target, data=body, method="POST" if body is not None else "GET",
                                     headers={"Accept": "application/fhir+json"})
    if body is not None:
        request.add_header("Content-Type", "application/fhir+json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    host = server_host(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            answer_body = response.read()
    except urllib.error.HTTPError as exc:
        reason = _outcome_text(exc.read())
        if exc.code in (401, 403):
            raise FhirSendError(f"the FHIR server at {host} did not accept the credentials (HTTP {exc.code}: "
                                f"{reason}); check the token file") from None
        if exc.code == 413:
            raise FhirSendError(f"the FHIR server at {host} took the request for too large (HTTP 413); send fewer "
                                "recordings at a time (--batch 1; fhir.batch for the hourly send), or leave the audio "
                                "out (--no-audio; fhir.include_audio = false)") from None
        if body is None:
            raise FhirSendError(f"{host} answered HTTP {exc.code} ({reason}) when asked what it is: is {url} the "
                                "server's base address (for HAPI FHIR, ending in /fhir)?") from None
        raise FhirSendError(f"the FHIR server at {host} refused the records (HTTP {exc.code}: {reason}); "
                            "nothing of this transaction was stored") from None
    except OSError as exc:  # URLError wraps what failed; a TLS error can also come bare (ssl.SSLError)
        cause: Union[str, BaseException] = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(cause, ssl.SSLError):
            raise FhirSendError(f"the FHIR server at {host} could not be trusted ({cause.reason or cause}); if "
                                "it has a certificate of its own, give its CA with --ca-file (fhir.ca_file for the "
                                "hourly send)") from None
        raise FhirSendError(f"could not reach the FHIR server at {host} ({cause}); check the address and that "
                            "this device's network reaches it") from None
    try:
        answer = json.loads(answer_body)
    except ValueError:
        raise FhirSendError(f"{host} answered, but not with FHIR JSON: is {url} the server's base address "
                            "(for HAPI FHIR, ending in /fhir)?") from None
    if not isinstance(answer, dict):
        raise FhirSendError(f"{host} answered, but not with a FHIR resource: is {url} the server's base address "
                            "(for HAPI FHIR, ending in /fhir)?")
    return answer


def tls_context(url: str, ca_file: Optional[Path] = None) -> ssl.SSLContext:
    """The TLS context to reach ``url`` with (its CA from ``ca_file``, else the system's);
    FhirSendError for an address that is no server's or an unreadable CA file."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FhirSendError(f"{url!r} is not a server address: give it as https://host/path (HAPI FHIR: .../fhir)")
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise FhirSendError(f"the CA file {ca_file} could not be read ({exc})") from None


def send(recordings: Sequence, make_bundle: Callable[[Iterable], dict], url: str, *, token: str = "",
         ca_file: Optional[Path] = None, batch: int = DEFAULT_BATCH,
         progress: Optional[Callable[[SendReport], None]] = None,
         accepted: Optional[Callable[[list], None]] = None) -> SendReport:
    """Send ``recordings`` in :func:`batches`, each made into a transaction by ``make_bundle``;
    stops at the first failure (:class:`FhirSendError`, its message saying how many went).
    ``accepted``: called with each group of recordings the server took, as soon as it did."""
    context = tls_context(url, ca_file)
    report = SendReport()
    for group in batches(recordings, batch):
        try:
            answer = post_transaction(url, make_bundle(group), token=token, context=context)
        except FhirSendError as exc:
            if report.transactions:
                raise FhirSendError(f"{exc} ({report.recordings} of {len(recordings)} recordings were sent "
                                    "before it; sending all again is safe)") from None
            raise
        if accepted:
            accepted(group)
        report.transactions += 1
        report.recordings += len(group)
        for entry in answer.get("entry", []):
            status = str((entry.get("response") or {}).get("status", "?"))
            report.statuses[status] = report.statuses.get(status, 0) + 1
            report.created += status.startswith("201")
            report.updated += status.startswith("200")
        if progress:
            progress(report)
    return report
