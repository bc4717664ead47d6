"""`heartpi export --format fhir-transaction --send URL`: the records reach a FHIR server over HTTP.

No FHIR server ships for Debian, so the tests run a small one on a real socket: it takes
transactions at its base address, files each PUT under its url, answers 201 for a new
resource and 200 for a replaced one, and refuses a whole transaction whose references do not
resolve once it is applied (as HAPI FHIR does) or whose token is wrong.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from device.records import RecordStore
from heartpi.fhir_send import batches
from tests.test_fhir_export import references_in
from tests.test_tools import run_cli

TOKEN = "s3cret-token"


class FhirServer:
    """What the tests need of a FHIR server, on 127.0.0.1."""

    def __init__(self, tls_context=None):
        self.resources: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.fail_from = None  #: answer 500 from this transaction on (counting from 1)
        self.reply_html = False
        self.max_bytes = 0  #: refuse a larger request with 413, as a size-limited proxy does (0: any size)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: dict | str) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != "/fhir/metadata":
                    return self._answer(404, _outcome(f"no such endpoint {self.path}"))
                self._answer(200, {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                                   "fhirVersion": "4.0.1", "software": {"name": "HAPI FHIR Server", "version": "7.4.0"}})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if server.max_bytes and len(body) > server.max_bytes:
                    return self._answer(413, "<html>413 Request Entity Too Large</html>")
                bundle = json.loads(body)
                server.requests.append({"path": self.path, "headers": dict(self.headers), "bundle": bundle})
                if server.reply_html:
                    return self._answer(200, "<html>a login page</html>")
                if self.path != "/fhir":
                    return self._answer(404, _outcome(f"no such endpoint {self.path}"))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, _outcome("HAPI-0644: invalid bearer token"))
                if server.fail_from and len(server.requests) >= server.fail_from:
                    return self._answer(500, _outcome("HAPI-0550: database unavailable"))
                if bundle.get("type") != "transaction":
                    return self._answer(400, _outcome("HAPI-0527: bundle is not a transaction"))
                after = dict(server.resources)
                statuses = []
                for entry in bundle["entry"]:
                    url, method = entry["request"]["url"], entry["request"]["method"]
                    if method == "DELETE" and "resource" not in entry:  # deleting nothing is no error (FHIR's rule)
                        statuses.append("204 No Content")
                        after.pop(url, None)
                        continue
                    resource = entry["resource"]
                    if method != "PUT" or url != f"{resource['resourceType']}/{resource['id']}":
                        return self._answer(400, _outcome(f"HAPI-0992: bad request for {url}"))
                    statuses.append("200 OK" if url in after else "201 Created")
                    after[url] = resource
                dangling = [(url, r) for url, res in after.items() for r in references_in(res) if r not in after]
                if dangling and any(e["request"]["method"] == "DELETE" for e in bundle["entry"]):
                    return self._answer(409, _outcome(  # HAPI's words when a deleted resource is still named
                        f"HAPI-0515: Unable to delete {dangling[0][1]} because at least one resource has a reference "
                        f"to this resource. First reference found was resource {dangling[0][0]}"))
                if dangling:  # all or nothing: nothing of this transaction is kept
                    return self._answer(400, _outcome(f"HAPI-1094: resource {dangling[0][1]} not found"))
                server.resources = after
                self._answer(200, {"resourceType": "Bundle", "type": "transaction-response",
                                   "entry": [{"response": {"status": s}} for s in statuses]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls_context:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/fhir"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _outcome(text: str) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                           "diagnostics": text}]}


@pytest.fixture
def device(tmp_path):
    return make_device(tmp_path)


def make_device(tmp_path: Path):
    """A device's data folder: one person recorded at two places in one visit, another person
    once, and a recording nobody was given; and a token file. (the CLI's environment, the token
    file, the data folder)"""
    data = tmp_path / "data"
    (data / "recordings").mkdir(parents=True)
    store = RecordStore(data / "heartpi.sqlite3")
    ama = store.add_patient(name="Ama Owusu", external_id="AO-1", actor="t")
    kofi = store.add_patient(name="Kofi Mensah", actor="t")
    for n, (patient, visit) in enumerate([(ama, "a1b2c3d4e5f6"), (ama, "a1b2c3d4e5f6"), (kofi, None), (None, None)]):
        (data / "recordings" / f"r{n}.wav").write_bytes(b"RIFF%d" % n)
        rec = store.add_recording(file=f"r{n}.wav", sha256=f"{n}" * 64, duration_s=20.0, rate=48000,
                                  source="device", device_id="box", verdict=("normal", "abnormal")[n % 2],
                                  p_abnormal=0.5 * (n % 2), visit=visit, captured_at=f"2026-03-02T09:0{n}:00+00:00")
        if patient:
            store.assign_recording(rec, patient, actor="t")
    store.close()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return {"HEARTPI_DATA_DIR": str(data)}, token, data


def _send(device, url, *extra):
    env, token, _ = device
    return run_cli("export", "--format", "fhir-transaction", "--send", url, "--token-file", str(token), *extra, env=env)


def _audit(data: Path) -> list[str]:
    """The sends' audit entries, newest first: "sent: ..." or "failed: ..."."""
    from webui.exporting import FHIR_SEND_FAILED, FHIR_SENT

    store = RecordStore(data / "heartpi.sqlite3")
    try:
        entries = [e for action in (FHIR_SENT, FHIR_SEND_FAILED) for e in store.audit_entries(action=action)]
        return [("sent: " if e["action"] == FHIR_SENT else "failed: ") + e["detail"]
                for e in sorted(entries, key=lambda e: -e["id"])]
    finally:
        store.close()


def test_records_reach_the_server_and_sending_again_updates_them(device, fhir_server):
    first = _send(device, fhir_server.url, "--batch", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    # newest first: the unassigned recording and Kofi's, then the visit's two together
    assert "PASS  FHIR server: 4 recording(s) in 2 transaction(s) to 127.0.0.1" in first.stdout
    kinds = sorted(url.split("/")[0] for url in fhir_server.resources)
    assert kinds == ["Encounter", "Media", "Media", "Media", "Media", "Observation", "Observation", "Observation",
                     "Observation", "Patient", "Patient"]
    assert all(r["headers"]["Content-Type"] == "application/fhir+json" for r in fhir_server.requests)
    # a visit's two recordings travel together, with their Encounter and patient
    sent = [[e["resource"]["resourceType"] for e in r["bundle"]["entry"]] for r in fhir_server.requests]
    assert [k.count("Media") for k in sent] == [2, 2] and [k.count("Encounter") for k in sent] == [0, 1]
    held = json.dumps(fhir_server.resources, sort_keys=True)
    again = _send(device, fhir_server.url)
    assert again.returncode == 0, again.stdout
    assert "0 resources created, 11 updated" in again.stdout and len(fhir_server.requests) == 3
    assert json.dumps(fhir_server.resources, sort_keys=True) == held  # the same resources, not copies
    audit = _audit(device[2])
    assert len(audit) == 2 and all(a.startswith("sent: ") and "to 127.0.0.1" in a and "4 recordings" in a
                                   for a in audit)


def test_visits_stay_together_in_a_batch():
    class Rec:
        def __init__(self, id, visit=None):
            self.id, self.visit = id, visit

    recs = [Rec(1, "v1"), Rec(2, "v1"), Rec(3), Rec(4, "v2"), Rec(5, "v2"), Rec(6, "v2"), Rec(7)]
    assert [[r.id for r in b] for b in batches(recs, 2)] == [[1, 2], [3], [4, 5, 6], [7]]
    assert [[r.id for r in b] for b in batches(recs, 20)] == [[1, 2, 3, 4, 5, 6, 7]]
    with pytest.raises(ValueError):
        batches(recs, 0)


def test_a_wrong_token_is_named_and_audited(device, fhir_server, tmp_path):
    env, _, data = device
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it")
    result = run_cli("export", "--format", "fhir-transaction", "--send", fhir_server.url, "--token-file", str(wrong), env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "did not accept the credentials (HTTP 401: HAPI-0644: invalid bearer token); check the token file" in result.stdout
    assert not fhir_server.resources and _audit(data)[0].startswith("failed: ") and "HTTP 401" in _audit(data)[0]


def test_a_refusal_says_what_the_server_said_and_a_failure_part_way_what_went(device, fhir_server):
    fhir_server.fail_from = 2
    result = _send(device, fhir_server.url, "--batch", "1")
    assert result.returncode == 1
    assert "refused the records (HTTP 500: HAPI-0550: database unavailable)" in result.stdout
    assert "(1 of 4 recordings were sent before it; sending all again is safe)" in result.stdout
    fhir_server.fail_from = None
    assert _send(device, fhir_server.url, "--batch", "1").returncode == 0 and len(fhir_server.resources) == 11


def test_an_unreachable_or_wrong_address_gets_a_message_not_a_traceback(device, fhir_server):
    free = fhir_server.url.replace("/fhir", "/other")
    result = _send(device, free)
    assert result.returncode == 1 and "HTTP 404: no such endpoint /other" in result.stdout
    fhir_server.close()
    result = _send(device, fhir_server.url)
    assert result.returncode == 1 and "could not reach the FHIR server at 127.0.0.1" in result.stdout
    assert "check the address" in result.stdout and "Traceback" not in result.stderr
    assert "is not a server address" in _send(device, "fhir.example.org/fhir").stdout


def test_a_request_too_large_for_the_server_says_how_to_send_smaller(device, fhir_server):
    fhir_server.max_bytes = 2000
    result = _send(device, fhir_server.url, "--batch", "1")
    assert result.returncode == 1 and "too large (HTTP 413)" in result.stdout
    assert "--batch 1" in result.stdout and "--no-audio" in result.stdout


def test_a_page_that_is_not_a_fhir_server_is_named(device, fhir_server):
    fhir_server.reply_html = True
    result = _send(device, fhir_server.url)
    assert result.returncode == 1 and "not with FHIR JSON: is" in result.stdout and "base address" in result.stdout


def test_send_goes_with_a_transaction_only(device, fhir_server):
    env, token, _ = device
    for options in (["--format", "fhir"], ["--format", "fhir-transaction", "-o", "x.json"]):
        result = run_cli("export", *options, "--send", fhir_server.url, env=env)
        assert result.returncode == 1 and "--send posts a FHIR transaction" in result.stdout
    result = run_cli("export", "--format", "fhir-transaction", "--token-file", str(token), env=env)
    assert result.returncode == 1 and "go with --send" in result.stdout
    assert not fhir_server.requests


def test_a_server_with_its_own_certificate_is_trusted_only_with_its_ca(device, tmp_path):
    import ssl

    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=regional-fhir",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fhir = FhirServer(tls_context=context)
    try:
        refused = _send(device, fhir.url)
        assert refused.returncode == 1 and "could not be trusted" in refused.stdout and "--ca-file" in refused.stdout
        trusted = _send(device, fhir.url, "--ca-file", str(cert))
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        assert len(fhir.resources) == 11
    finally:
        fhir.close()
