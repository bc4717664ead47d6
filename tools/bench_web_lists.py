#!/usr/bin/env python3
"""Benchmark the clinic web page's lists on a database after years of use.

Builds a records database like a busy clinic's after ``--years`` (``--patients`` patients,
``--per-day`` recordings a day, a quarter of them never assigned), then times each list page
through the real Flask app (logged in as an administrator, so each view also writes its audit
entry as in use), against the reference of the same run: the password form, which renders a
template and reads only the signed-in account. Prints p50 milliseconds and the ratio to the reference per
page; a page whose ratio stays small does not slow down as the clinic's records grow.
Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PASSWORD = "a long benchmark password"


def fill(store, patients: int, recordings: int, model_sha256: str, seed: int = 3, per_day: int = 40) -> None:
    """``patients`` patients and ``recordings`` records (no audio files), in two transactions; a
    tenth of the recordings carry a clinician's finding (the Device page's field results). As the
    box stamps them, recordings come in visits of one person (schema 8): one place, or a poor
    signal recorded again, or a four-place protocol."""
    rng = random.Random(seed)
    start = time.time() - recordings / per_day * 86400  # spread over the years they stand for
    with store.transaction() as conn:
        for n in range(patients):
            at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + rng.random() * (time.time() - start)))
            conn.execute("INSERT INTO patients (name, external_id, created_at, updated_at) VALUES (?, ?, ?, ?)",
                         (f"{rng.choice('ABCDEFGHKLMNOPRSTYZ')}{n:06d} Patient", f"P-{n:06d}", at, at))
    verdicts = ("normal",) * 6 + ("abnormal",) * 3 + ("poor_signal",)
    with store.transaction() as conn:
        left_in_visit = 0
        for n in range(recordings):
            at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + n * (time.time() - start) / recordings))
            if not left_in_visit:
                left_in_visit, visit = rng.choice((1, 1, 2, 4)), f"{n:012x}"
                patient = rng.randint(1, patients) if rng.random() < 0.75 else None
            left_in_visit -= 1
            finding = rng.choice(("normal", "abnormal")) if rng.random() < 0.1 else None
            conn.execute("INSERT INTO recordings (file, sha256, duration_s, rate, captured_at, source, device_id, "
                         "verdict, patient_id, model_sha256, finding, finding_at, visit, level_dbfs) "
                         "VALUES (?, ?, 20.0, 2000, ?, 'device', 'bench', ?, ?, ?, ?, ?, ?, ?)",
                         (f"r{n}.wav", "0" * 64, at, rng.choice(verdicts), patient, model_sha256, finding,
                          at if finding else None, visit, round(rng.gauss(-30.0, 8.0), 1)))
    # the audit log: each recording's patient looked at four times (its page, the recording's,
    # an assignment, a finding), as a clinic's log grows
    with store.transaction() as conn:
        for n in range(recordings * 4):
            at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + n * (time.time() - start) / recordings / 4))
            conn.execute("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, 'user:3:n@clinic', "
                         "'patient.view', ?, '')", (at, f"patient:{rng.randint(1, patients)}"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--per-day", type=int, default=40)
    parser.add_argument("--years", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--timezone", default="Asia/Kathmandu", help="the clinic's zone (device.timezone): "
                        "times shown and days cut in it; UTC is the cheapest case")
    args = parser.parse_args(argv)

    from device.config import config_from_mapping
    from model import Classifier
    from webui import create_app
    from webui.passwords import hash_password

    recordings = int(args.per_day * 365 * args.years)
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_mapping({"device": {"id": "bench", "timezone": args.timezone},
                                      "storage": {"data_dir": tmp}}, env={})
        app = create_app({"TESTING": True, "HEARTPI_CONFIG": config})
        store = app.extensions["heartpi_store"]
        built = time.perf_counter()
        fill(store, args.patients, recordings, Classifier.load().sha256, per_day=args.per_day)
        store.add_user(email="admin@bench", password_hash=hash_password(PASSWORD), role="admin", actor="bench")
        print(f"{args.patients} patients, {recordings} recordings "
              f"({args.per_day}/day for {args.years:g} years) built in {time.perf_counter() - built:.1f} s; "
              f"clinic time zone {args.timezone}")
        client = app.test_client()
        client.get("/login", base_url="https://localhost")
        token = client.get("/login", base_url="https://localhost").get_data(as_text=True).split(
            'name="csrf_token" value="', 1)[1].split('"', 1)[0]
        client.post("/login", base_url="https://localhost",
                    data={"email": "admin@bench", "password": PASSWORD, "csrf_token": token})
        last_page = -(-recordings // 100)
        middle = recordings // 2
        day = store.get_recording(middle).captured_at[:10]
        next_day = (_dt.date.fromisoformat(day) + _dt.timedelta(days=1)).isoformat()
        year_ago = (_dt.date.today() - _dt.timedelta(days=365)).isoformat()
        year_ago_next = (_dt.date.today() - _dt.timedelta(days=364)).isoformat()
        pages = {
            "password form (reference)": "/password",
            "recordings, newest": "/recordings",
            f"recordings, oldest (page {last_page})": f"/recordings?page={last_page}",
            "recordings, abnormal only": "/recordings?verdict=abnormal",
            "recordings, one day": f"/recordings?since={day}&until={next_day}",
            "recordings, unassigned only": "/recordings?unassigned=1",
            "patients, first page": "/patients",
            "patients, searched": "/patients?q=P-0012",
            "one patient": f"/patients/{args.patients // 2}",
            "one recording (patient picker)": f"/recordings/{middle}",
            "one recording, picker searched": f"/recordings/{middle}?find=K0",
            "upload form (patient picker)": "/upload",
            "export form (patient picker)": "/export",
            "device page (field results)": "/device",
            "audit log, newest": "/admin/audit",
            "audit log, one day a year ago": f"/admin/audit?since={year_ago}&until={year_ago_next}",
            "audit log, one patient": f"/admin/audit?target=patient:{args.patients // 2}",
            "audit log, older page (middle)": f"/admin/audit?before={recordings * 2}",
        }
        times = {}
        for name, url in pages.items():
            samples = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                response = client.get(url, base_url="https://localhost")
                samples.append(time.perf_counter() - began)
                if response.status_code != 200:
                    raise SystemExit(f"{url}: HTTP {response.status_code}")
            times[name] = statistics.median(samples)
        reference = times["password form (reference)"]
        print(f"{'page':40s} {'p50 ms':>8s} {'× ref':>8s}")
        for name, seconds in times.items():
            print(f"{name:40s} {seconds * 1000:8.1f} {seconds / reference:8.1f}")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
