#!/usr/bin/env python3
"""How much do single training runs vary, and what would averaging them buy?

Usage: tools/eval_seed_ensemble.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is the ``--out`` of ``python -m model.train`` (``heartpi-cnn-float.keras`` and
``heartpi-cnn.json``); all must share the split seed (runs that differ only in ``--init-seed``).
For every run and for the average of their probabilities: the threshold chosen on validation,
then validation, test-split and Yaseen (a device never trained on) figures, float32 models.
An evaluation, not a selection: nothing here chooses what ships.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dsp  # noqa: E402
from model.metrics import best_threshold  # noqa: E402
from model.train.dataset import DEFAULT_DATA, YASEEN, load_audio, read_labels, split_records  # noqa: E402
from model.train.pipeline import evaluate, keras_scorer, record_scores, record_windows  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "heartpi-train")
    args = parser.parse_args()
    import tensorflow as tf

    metas = [json.loads((run / "heartpi-cnn.json").read_text()) for run in args.runs]
    seeds = {meta["metrics"]["seed"] for meta in metas}
    if len(seeds) != 1:
        parser.error(f"runs use different split seeds {sorted(seeds)}: their test splits differ")
    params = dsp.FeatureParams.from_dict(metas[0]["features"])
    records = read_labels(args.data, "physionet2016")
    load_audio(records, args.data, args.cache)
    splits = split_records(records, seed=seeds.pop())
    sets = {"validation": splits["validation"], "test": splits["test"]}
    if (args.data / YASEEN).exists():
        sets["yaseen"] = read_labels(args.data, YASEEN)
        load_audio(sets["yaseen"], args.data, args.cache)
    windows = {name: record_windows(recs, params) for name, recs in sets.items()}
    labels = {name: np.array([r.label for r in recs]) for name, recs in sets.items()}

    scores: dict[str, dict[str, np.ndarray]] = {}
    for run, meta in zip(args.runs, metas):
        model = tf.keras.models.load_model(run / "heartpi-cnn-float.keras", compile=False)
        name = f"{run.name} (init seed {meta['metrics'].get('init_seed', meta['metrics']['seed'])})"
        scores[name] = {s: record_scores(windows[s], keras_scorer(model)) for s in sets}
    scores[f"average of the {len(args.runs)}"] = {s: np.mean([v[s] for v in scores.values()], axis=0)
                                                   for s in sets}

    print(f"{'float32 model':40} {'val MAcc':>8} {'test Se':>8} {'test Sp':>8} {'test MAcc':>9} "
          f"{'test AUC':>8} {'Yaseen MAcc':>11} {'Yaseen AUC':>10}")
    for name, by_set in scores.items():
        threshold = best_threshold(labels["validation"], by_set["validation"])
        m = {s: evaluate(labels[s], by_set[s], threshold) for s in sets}
        yaseen = m.get("yaseen", {"macc": float("nan"), "auc": float("nan")})
        print(f"{name:40} {m['validation']['macc']:8.3f} {m['test']['sensitivity']:8.3f} "
              f"{m['test']['specificity']:8.3f} {m['test']['macc']:9.3f} {m['test']['auc']:8.3f} "
              f"{yaseen['macc']:11.3f} {yaseen['auc']:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
