"""Recordings, labels and record-level splits from ``../shared/data``.

Audio is converted once to the canonical analysis rate with :func:`dsp.to_analysis_rate`
(the device's own front end) and cached as one ``.npz`` so re-runs take seconds.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

import dsp

log = logging.getLogger(__name__)
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PHYSIONET_SOURCES = tuple(f"training-{c}" for c in "abcdef")
YASEEN = "yaseen2018"  # the second dataset's folder and its single source set


@dataclass
class Record:
    name: str           # e.g. physionet2016/training-a/a0005.flac
    label: int          # 1 abnormal, 0 normal
    source: str         # source set (stethoscope / site)
    sqi: Optional[int]
    audio: Optional[np.ndarray] = None  # at dsp.ANALYSIS_RATE_HZ, band-passed


def read_labels(data_dir: Path, dataset: str) -> list[Record]:
    """Records listed in ``data_dir/dataset/labels.csv``."""
    records = []
    with open(data_dir / dataset / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["label"] not in ("normal", "abnormal"):
                continue
            source = row["source_set"] if dataset == "physionet2016" else dataset
            sqi = int(row["sqi"]) if row.get("sqi") not in (None, "") else None
            records.append(Record(f"{dataset}/{row['file']}", int(row["label"] == "abnormal"), source, sqi))
    return records


def read_stored(path: Union[str, Path], dtype: str = "float32") -> tuple[np.ndarray, int]:
    """A recording of ``../shared/data`` as stored: its channels averaged, at its own rate."""
    import soundfile

    samples, rate = soundfile.read(path, dtype=dtype, always_2d=True)
    return samples.mean(axis=1), rate


def _load_one(path: str) -> np.ndarray:
    return dsp.to_analysis_rate(*read_stored(path)).astype(np.float32)


def load_audio(records: Sequence[Record], data_dir: Path, cache_dir: Optional[Path] = None,
               workers: int = 2) -> None:
    """Fill ``record.audio`` for every record, through an on-disk cache when given.

    The cache is keyed by the records *and* the front end's source code: audio cached by an
    earlier resampler or filter differs by ~1e-8, which training amplifies into a different
    model, so a stale cache would make a run unreproducible from a fresh clone.
    """
    front_end = Path(dsp.filters.__file__).read_bytes()
    key = hashlib.sha256("\n".join(r.name for r in records).encode() + front_end).hexdigest()[:16]
    cache = cache_dir / f"audio-{key}.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache) as stored:
            for i, record in enumerate(records):
                record.audio = stored[f"a{i}"]
        return
    paths = [str(data_dir / r.name) for r in records]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for record, audio in zip(records, pool.map(_load_one, paths, chunksize=16)):
            record.audio = audio
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **{f"a{i}": r.audio for i, r in enumerate(records)})
        os.replace(tmp, cache)


def split_records(records: Sequence[Record], *, seed: int, test: float = 0.2,
                  validation: float = 0.15) -> dict[str, list[Record]]:
    """Record-level split, stratified by source set and label: no recording in two splits."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[Record]] = {}
    for record in sorted(records, key=lambda r: r.name):
        groups.setdefault((record.source, record.label), []).append(record)
    out: dict[str, list[Record]] = {"train": [], "validation": [], "test": []}
    for key in sorted(groups):
        members = groups[key]
        order = rng.permutation(len(members))
        n_test = int(round(test * len(members)))
        n_val = int(round(validation * len(members)))
        for rank, index in enumerate(order):
            split = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
            out[split].append(members[index])
    return out


def split_for_model(records: Sequence[Record], seed: int, train_without: Sequence[str] = ()
                    ) -> dict[str, list[Record]]:
    """A final model's train / validation / test split. The split itself never depends on
    ``train_without`` (the same test recordings with or without it); the source sets named there
    are then dropped from training and validation, so in the test split they are a device the
    model never heard."""
    splits = split_records(records, seed=seed)
    for name in ("train", "validation"):
        splits[name] = [r for r in splits[name] if r.source not in train_without]
    return splits


def model_splits(metadata: dict, data_dir: Path) -> dict[str, list[Record]]:
    """The PhysioNet split a shipped model was made with (its metadata's seed and source sets
    left out of training), for the evaluation tools: its test recordings are the ones the model
    never saw."""
    metrics = metadata.get("metrics", {})
    return split_for_model(read_labels(data_dir, "physionet2016"), metrics.get("seed", 20161),
                           metrics.get("train_without", ()))
