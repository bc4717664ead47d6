#!/usr/bin/env python3
"""Collect ``python -m model.train --loso-only`` outputs into model/assets/ablations.json.

Usage: tools/collect_ablations.py "VARIANT LABEL=PATH" ...  where PATH is the log of a
``--loso-only`` run (its JSON report is the last thing it prints) or the ``heartpi-cnn.json`` of a
full ``--loso`` run (which adds the test split and the external device). Rows are merged into the
file by label (a label given again replaces its row). The model card renders the table from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_json(text: str) -> dict:
    start = text.rindex("\n{")
    return json.loads(text[start:])


def main(specs: list[str]) -> int:
    rows = []
    for spec in specs:
        label, path = spec.rsplit("=", 1)
        text = Path(path).read_text()
        if path.endswith(".json"):
            metrics = json.loads(text)["metrics"]
            rows.append({"variant": label, "loso": metrics["loso"], "test_int8": metrics["test_int8"],
                         "external": metrics.get("external_yaseen2018_int8")})
        else:
            rows.append({"variant": label, "loso": last_json(text)})
    target = ROOT / "model" / "assets" / "ablations.json"
    # Merge by variant label: earlier rows stay (their logs need not be kept), a re-run replaces its row.
    kept = json.loads(target.read_text()) if target.exists() else []
    new_labels = {row["variant"] for row in rows}
    rows = [row for row in kept if row["variant"] not in new_labels] + rows
    target.write_text(json.dumps(rows, indent=1) + "\n")
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
