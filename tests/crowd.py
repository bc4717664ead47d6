"""A clinic after a year, fast: many patients and recordings inserted in one transaction each
(one fsync instead of one per row), straight into a real records database."""

from __future__ import annotations


def bulk_patients(store, names, updated_at="2026-01-01T00:00:00+00:00", numbers="N") -> list[int]:
    """Patients named ``names``, numbered ``{numbers}-00000`` on, last changed at ``updated_at``."""
    with store.transaction() as conn:
        return [conn.execute("INSERT INTO patients (name, external_id, created_at, updated_at) "
                             "VALUES (?, ?, ?, ?)", (name, f"{numbers}-{i:05d}", updated_at, updated_at)).lastrowid
                for i, name in enumerate(names)]


def bulk_recordings(store, n, *, verdict="normal", patient_id=None, day="2026-03") -> list[int]:
    """``n`` device recordings in month ``day`` (records only: no audio file behind them)."""
    with store.transaction() as conn:
        return [conn.execute(
            "INSERT INTO recordings (file, sha256, duration_s, rate, captured_at, source, device_id, "
            "verdict, patient_id) VALUES (?, ?, 20.0, 2000, ?, 'device', 'box', ?, ?)",
            (f"{verdict}-{day}-{i}.wav", "0" * 64, f"{day}-{1 + i % 28:02d}T08:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
             verdict, patient_id)).lastrowid for i in range(n)]
