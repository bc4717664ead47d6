"""End-to-end training: data -> split -> features -> CNN -> threshold -> int8 -> evaluation.

Deterministic given ``--seed``; every number in the model card comes from here. The test
split is touched only after the threshold and the poor-signal rule have been fixed on the
validation split.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

import dsp
from model.classifier import (ASSETS, METADATA_FORMAT, Classifier, logit_spread, sha256_bytes,
                              software_version)
from model.metrics import auc, best_threshold, screening_metrics
from model.train.augment import augment, short_crop
from model.train.dataset import (DEFAULT_DATA, PHYSIONET_SOURCES, YASEEN, Record, load_audio,
                                 read_labels, read_stored, split_for_model, split_records)

log = logging.getLogger("model.train")
MAX_TRAIN_WINDOWS_PER_VERSION = 8
#: Training windows are cut every 1.5 s (then at most MAX_TRAIN_WINDOWS_PER_VERSION kept per
#: version), as the shipped model was trained.
TRAINING_WINDOW_HOP_S = 1.5
#: The device scores a window every 94 analysis frames (1.5 s) too. The network pools three
#: times by 2; with plain max-pooling its score of a window depended on which of 8 frame
#: alignments the sound fell on, and only windows every 23 frames (0.368 s, meeting all 8)
#: kept a verdict from moving with where the recording started. The anti-aliased pooling of the
#: shipped network (``--blur-pool``) does that inside the network, at a quarter of the windows
#: (tools/eval_start_jitter.py; the model card has the figures). ``--window-hop`` and
#: ``--reevaluate`` still set another hop for a model that needs one.
DEVICE_WINDOW_HOP_S = 1.5


def training_params(params: dsp.FeatureParams) -> dsp.FeatureParams:
    """The features of training windows: the device's, cut every :data:`TRAINING_WINDOW_HOP_S`."""
    return replace(params, window_hop_s=TRAINING_WINDOW_HOP_S)


def _windows_of(args) -> list[np.ndarray]:
    audio, params, n_aug, seed, resonance, grain, short_crops = args
    rng = np.random.default_rng(seed)
    chains = [audio] + [augment(audio, rng, resonance=resonance, grain=grain) for _ in range(n_aug)]
    versions = [dsp.window_features(chain, params) for chain in chains]
    out = []
    for windows in versions:
        if len(windows) > MAX_TRAIN_WINDOWS_PER_VERSION:
            keep = rng.choice(len(windows), MAX_TRAIN_WINDOWS_PER_VERSION, replace=False)
            windows = windows[np.sort(keep)]
        out.append(windows)
    # Short clips draw from their own generator, so the versions above are the same with or without them.
    crop_rng = np.random.default_rng([seed, 1])
    for i in range(len(out) if short_crops else 0):
        clips = [dsp.window_features(short_crop(chains[i], crop_rng), params) for _ in range(short_crops)]
        out[i] = np.concatenate([out[i], *clips])
    return out


def _record_seed(name: str, seed: int) -> int:
    return int.from_bytes(sha256_bytes(f"{seed}:{name}".encode()).encode()[:8], "little")


def training_versions(records: Sequence[Record], params: dsp.FeatureParams, *, n_aug: int,
                      seed: int, workers: int = 2, resonance: bool = False, grain: bool = False,
                      short_crops: int = 0) -> dict[str, list[np.ndarray]]:
    """Windows of each recording: the original and ``n_aug`` augmented versions.

    ``short_crops``: each version also gives that many windows of a random 1.2-4 s stretch of
    itself, normalised over the stretch alone and tiled, as the device treats a short clip that
    another stethoscope or a phone app exported (:func:`~model.train.augment.short_crop`).
    Computed once per recording (seeded by its name) so that every LOSO fold reuses them.
    """
    jobs = [(r.audio, params, n_aug, _record_seed(r.name, seed), resonance, grain, short_crops) for r in records]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return {r.name: versions for r, versions in zip(records, pool.map(_windows_of, jobs, chunksize=8))}


def training_windows(records: Sequence[Record], versions: dict[str, list[np.ndarray]]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack windows with labels and weights that balance source x class.

    Every (source, label) group carries the same total weight, so "normal" cannot come to
    mean "sounds like training-e's stethoscope"; each recording weighs the same whatever
    its length.
    """
    counts: dict[tuple, int] = {}
    for r in records:
        counts[(r.source, r.label)] = counts.get((r.source, r.label), 0) + 1
    xs, ys, ws = [], [], []
    for record in records:
        weight = len(records) / (len(counts) * counts[(record.source, record.label)])
        n_windows = sum(len(w) for w in versions[record.name])
        for windows in versions[record.name]:
            xs.append(windows)
            ys.append(np.full(len(windows), record.label, np.float32))
            ws.append(np.full(len(windows), weight / n_windows, np.float32))
    w = np.concatenate(ws)
    return np.concatenate(xs)[..., None], np.concatenate(ys), w / w.mean()


#: What group DRO weighs: each source set's normal and abnormal recordings apart, or each source
#: set as one (its classes keep :func:`training_windows`' balance within it)
DRO_GROUPS = ("source-class", "source")


def training_groups(records: Sequence[Record], versions: dict[str, list[np.ndarray]], by: str = "source-class"
                    ) -> np.ndarray:
    """Each training window's group index (:data:`DRO_GROUPS`), in :func:`training_windows`' order."""
    if by not in DRO_GROUPS:
        raise ValueError(f"groups are one of {', '.join(DRO_GROUPS)}, not {by!r}")

    def key(r: Record) -> tuple:
        return (r.source, r.label) if by == "source-class" else (r.source,)

    index = {group: i for i, group in enumerate(sorted({key(r) for r in records}))}
    return per_training_window(records, versions, lambda r: index[key(r)])


def per_training_window(records: Sequence[Record], versions: dict[str, list[np.ndarray]],
                        value: Callable[[Record], int]) -> np.ndarray:
    """``value(record)`` once for each of its training windows, in :func:`training_windows`' order."""
    return np.concatenate([np.full(len(windows), value(r), np.int32) for r in records for windows in versions[r.name]])


def _eval_windows(args):
    audio, params = args
    # as the device scores them (dsp.interruptions), but without looking for bursts of noise: the
    # cached audio is band-passed, so what lay outside the heart band is gone
    scored = dsp.scored_windows(audio, params)
    # none left: the device says "poor signal" (lifted); scored whole here so every recording has a score
    return scored.windows if len(scored.windows) else dsp.window_features(audio, params)


#: Per source set, each cepstral coefficient's mean and standard deviation (:func:`source_statistics`).
SourceStats = dict[str, tuple[np.ndarray, np.ndarray]]


def record_windows(records: Sequence[Record], params: dsp.FeatureParams, workers: int = 2,
                   source_stats: Optional[SourceStats] = None) -> list[np.ndarray]:
    """Each recording's windows as the device cuts them; ``source_stats``: then standardised by
    their source set's statistics (:func:`source_statistics`)."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        windows = list(pool.map(_eval_windows, [(r.audio, params) for r in records], chunksize=8))
    if source_stats is None:
        return windows
    return [standardised(w, source_stats[r.source]) for r, w in zip(records, windows)]


def source_statistics(records: Sequence[Record], versions: dict[str, list[np.ndarray]]) -> SourceStats:
    """Each source set's mean and s.d. of every cepstral coefficient over all frames of its
    recordings' original windows (``versions[name][0]``), labels unused: what a box could keep
    of its own stethoscope's recordings. ``--normalise source`` standardises by these instead of
    per recording, so a recording keeps its own spectral tilt (a murmur's among it) while its
    device's average one goes (a LOSO measurement: the box has no such statistics yet)."""
    frames: dict[str, list[np.ndarray]] = {}
    for r in records:
        if r.name in versions:
            original = versions[r.name][0]
            frames.setdefault(r.source, []).append(original.reshape(-1, original.shape[-1]))
    stats = {}
    for source, parts in frames.items():
        stacked = np.concatenate(parts).astype(np.float64)
        stats[source] = (stacked.mean(axis=0).astype(np.float32),
                         np.maximum(stacked.std(axis=0), 1e-6).astype(np.float32))
    return stats


def standardised(windows: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``windows`` (..., n_mfcc) less a source set's mean, over its s.d., per coefficient."""
    mean, std = stats
    return ((windows - mean) / std).astype(np.float32)


def record_scores(windows: list[np.ndarray], score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Mean window probability per recording (the device's aggregation)."""
    return np.array([float(np.mean(score(w))) for w in windows])


@dataclass(frozen=True)
class Tricks:
    """Additions measured against the plain recipe (model card's ablation table). Most are
    training-only; ``blur_pool`` and ``members`` shape the shipped network. The defaults are the
    plain recipe, for direct callers and tests; the command line's defaults are the shipped one."""

    mix_style: bool = False  #: MixStyle after the first two convolution blocks
    source_adversary: bool = False  #: a domain-adversarial head that tries to name the source set
    mixup: float = 0.0  #: Beta(a, a) of mixup between windows of a batch (0: off), :func:`training_batches`
    band_mask: int = 0  #: at most this many adjacent mel bands masked per window (0: off), :func:`training_batches`
    blur_pool: bool = False  #: anti-aliased pooling; unlike the others, part of the shipped network
    #: train without the recordings PhysioNet's annotators marked poor quality (REFERENCE-SQI 0):
    #: the device refuses most of those as poor signal, and their labels may rest on a heart
    #: the recording does not let one hear. Validation, test and held-out sources keep them.
    skip_poor_quality: bool = False
    #: no early stopping: the weights averaged over the later epochs (:mod:`model.train.averaging`)
    weight_average: bool = False
    #: this many narrow networks, their logits averaged (:mod:`model.train.ensemble`); 1: one network
    members: int = 1
    #: early stopping on the mean over validation source sets of their recordings' AUC
    #: (:func:`source_balanced_auc`) instead of the pooled windows' AUC, in which training-e's
    #: device, two thirds of the recordings, has the loudest say
    stop_on_sources: bool = False
    #: group DRO (Sagawa et al. 2020), done per epoch: each source x class group's training loss
    #: raises its weight by exp(step x loss), so the worst-served stethoscope's hearts count for
    #: more in the next epoch (0: off, every group as :func:`training_windows` weighs it)
    group_dro: float = 0.0
    #: the groups group DRO weighs (:data:`DRO_GROUPS`)
    dro_groups: str = "source-class"

    @property
    def batched(self) -> bool:
        """True when training batches come from :func:`training_batches`, not plain shuffling."""
        return bool(self.mixup or self.band_mask)


def training_batches(x: np.ndarray, y: np.ndarray, w: np.ndarray, *, batch_size: int, seed: int,
                     mixup: float = 0.0, band_mask: int = 0, n_mels: int = 0):
    """Training batches with mixup and/or band masking, as a ``tf.data`` pipeline reshuffled
    every epoch with seeded random draws: a run is reproducible, and as fast as plain batches
    (a Python ``PyDataset`` took twice as long per epoch).

    ``mixup`` (Zhang et al. 2018): each window is blended with another of the same batch,
    ``lam * a + (1 - lam) * b`` for the features, label and weight, with ``lam ~ Beta(mixup,
    mixup)`` folded to >= 0.5 so each blend stays mostly its own window. Batches mix
    stethoscopes, so the network sees recording chains between the sources' own (the research
    summary's domain-mixing family).

    ``band_mask`` (SpecAugment's frequency masking, Park et al. 2019, done on cepstra): each
    window loses a random run of 0 to ``band_mask`` adjacent bands of its ``n_mels``-band log-mel
    spectrum, smoothed as the MFCCs see it: ``x <- D diag(keep) D^T x`` with ``D`` the MFCCs'
    orthonormal DCT rows (so nothing changes when no band is masked). A stethoscope that
    swallows or rings one band then looks like something the network has met, instead of the
    evidence it leaned on. The features are the normalised MFCCs, so the masked band is set to
    the recording's own level, not to silence.
    """
    import tensorflow as tf

    def blend(xb, yb, wb):
        n = tf.shape(xb)[0]
        partners = tf.random.shuffle(tf.range(n), seed=seed)
        a = tf.random.gamma([n], mixup, seed=seed + 1)
        b = tf.random.gamma([n], mixup, seed=seed + 2)
        lam = a / tf.maximum(a + b, 1e-30)  # both draws can underflow to 0 at a small alpha: lam 0, folded to 1
        lam = tf.maximum(lam, 1.0 - lam)
        keep = 1.0 - lam
        mixed = lam[:, None, None, None] * xb + keep[:, None, None, None] * tf.gather(xb, partners)
        return mixed, lam * yb + keep * tf.gather(yb, partners), lam * wb + keep * tf.gather(wb, partners)

    def mask(xb, yb, wb):
        n = tf.shape(xb)[0]
        dct = tf.constant(dsp.features.dct_matrix(xb.shape[1], n_mels))  # (n_mfcc, n_mels)
        width = tf.random.uniform([n], 0, band_mask + 1, dtype=tf.int32, seed=seed + 3)
        start = tf.cast(tf.random.uniform([n], seed=seed + 4) * tf.cast(n_mels - width + 1, tf.float32), tf.int32)
        bands = tf.range(n_mels)[None, :]
        gone = tf.cast((bands >= start[:, None]) & (bands < (start + width)[:, None]), tf.float32)
        # D diag(1 - gone) D^T = I - D diag(gone) D^T, since D's rows are orthonormal
        removed = tf.einsum("ib,nb,jb->nij", dct, gone, dct)
        masked = xb[..., 0] - tf.einsum("nij,njt->nit", removed, xb[..., 0])
        return masked[..., None], yb, wb

    data = tf.data.Dataset.from_tensor_slices((x, y, w))
    data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if mixup:
        data = data.map(blend)
    if band_mask:
        if not 0 < band_mask < n_mels:
            raise ValueError(f"band_mask must be 1..{n_mels - 1} bands, not {band_mask}")
        data = data.map(mask)
    return data.prefetch(2)


def group_weighted_batches(x: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray, group_weights, *,
                           batch_size: int, seed: int):
    """Training batches whose windows weigh ``w`` times their group's current weight, read from
    the variable ``group_weights`` as each batch is made: :func:`group_dro_callback` changes it
    between epochs without rebuilding the data. Reshuffled every epoch with a seeded order."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y, w, groups.astype(np.int32)))
    data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return data.map(lambda xb, yb, wb, gb: (xb, yb, wb * tf.gather(group_weights, gb))).prefetch(2)


def group_losses(labels: np.ndarray, probabilities: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's mean binary cross-entropy over its windows (0 for a group without any)."""
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    loss = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    counts = np.bincount(groups, minlength=n_groups)
    return np.bincount(groups, loss, minlength=n_groups) / np.maximum(counts, 1)


def next_group_weights(weights: np.ndarray, losses: np.ndarray, step: float) -> np.ndarray:
    """Group DRO's exponentiated-gradient step: ``q * exp(step * loss)``, rescaled to mean 1 (every
    group starts with the same total weight, so the total stays what it was)."""
    q = weights * np.exp(step * (losses - losses.max()))  # shifted: the same ratios, no overflow
    return q / q.mean()


def group_dro_callback(x: np.ndarray, labels: np.ndarray, groups: np.ndarray, group_weights, *, step: float,
                       seed: int, per_group: int = 256):
    """A Keras callback that, after each epoch, scores up to ``per_group`` fixed training windows
    of each group (as the device would: the members' averaged logit), and moves
    ``group_weights`` by :func:`next_group_weights`. ``labels`` and ``groups``: per window."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    n_groups = int(groups.max()) + 1
    probe = np.sort(np.concatenate([rng.permutation(np.flatnonzero(groups == g))[:per_group]
                                    for g in range(n_groups)]))

    class GroupDRO(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            losses = group_losses(labels[probe], window_probabilities(self.model, x[probe]), groups[probe], n_groups)
            weights = next_group_weights(group_weights.numpy().astype(np.float64), losses, step)
            group_weights.assign(weights.astype(np.float32))
            if logs is not None:
                logs["worst_group_loss"] = float(losses.max())
            log.info("epoch %d: group losses %s; next weights %s", epoch + 1,
                     " ".join(f"{v:.3f}" for v in losses), " ".join(f"{v:.2f}" for v in weights))

    return GroupDRO()


def ganin_strength(progress: float) -> float:
    """The adversary's gradient-reversal strength at ``progress`` (0..1) through training:
    0 at the start, rising smoothly towards 1 (Ganin et al. 2016), so the source head first
    learns to tell the sources apart before its gradient reshapes the features."""
    return float(2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0)


def source_balanced_auc(labels: np.ndarray, scores: np.ndarray, sources: np.ndarray) -> float:
    """Mean over source sets of the AUC of their recordings' scores; a set whose recordings are all
    of one class has no AUC and is left out (nan when none has one). Each stethoscope counts once,
    however many recordings it brought."""
    values = [auc(labels[sources == s], scores[sources == s]) for s in np.unique(sources)]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def window_probabilities(model, x: np.ndarray) -> np.ndarray:
    """P(abnormal) per window from a network in training form: one network's output, or an
    ensemble's members' averaged logit (what the shipped file computes)."""
    p = np.asarray(model.predict(x, batch_size=512, verbose=0), dtype=np.float64).reshape(len(x), -1)
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return 1.0 / (1.0 + np.exp(-np.mean(np.log(p / (1 - p)), axis=1)))


def source_balanced_callback(x: np.ndarray, recording: np.ndarray, labels: np.ndarray, sources: np.ndarray):
    """A Keras callback that writes ``val_source_auc`` into each epoch's logs: validation
    windows scored, averaged per recording as the device does, then :func:`source_balanced_auc`.
    ``recording``: each window's recording index; ``labels``/``sources``: per recording."""
    import tensorflow as tf

    counts = np.bincount(recording, minlength=len(labels))

    class SourceBalancedAUC(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            scores = np.bincount(recording, window_probabilities(self.model, x), minlength=len(labels)) / counts
            value = source_balanced_auc(labels, scores, sources)
            if logs is not None:
                logs["val_source_auc"] = value
            log.info("epoch %d: validation AUC by source set, averaged: %.4f", epoch + 1, value)

    return SourceBalancedAUC()


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, val: tuple, params: dsp.FeatureParams, *,
        epochs: int, seed: int, batch_size: int = 128, tricks: Tricks = Tricks(),
        sources: Optional[tuple[np.ndarray, np.ndarray]] = None,
        val_records: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
        groups: Optional[np.ndarray] = None):
    """Train the CNN; returns the plain network (training-only parts removed).

    ``sources``: per-window source indices of the training and validation windows, needed
    by ``tricks.source_adversary``. ``val_records``: each validation window's recording index,
    and each recording's label and source index, needed by ``tricks.stop_on_sources``.
    ``groups``: each training window's source x class group, needed by ``tricks.group_dro``.
    """
    import tensorflow as tf

    from model.train.averaging import (first_averaged_epoch, remeasure_batch_norm, set_trainable_weights,
                                       weight_average_callback)
    from model.train.ensemble import build_ensemble
    from model.train.network import build_model, plain_network

    tf.keras.utils.set_random_seed(seed)
    labels = y  # per window, before an ensemble repeats them per member
    adversary = tricks.source_adversary
    strength = tf.Variable(0.0, trainable=False, dtype=tf.float32) if adversary else None
    loss, metrics, monitor, callbacks = "binary_crossentropy", [tf.keras.metrics.AUC(name="auc")], "val_auc", []
    if tricks.members > 1:
        if adversary or tricks.mix_style or tricks.batched:
            raise ValueError("an ensemble (members > 1) trains without MixStyle, the source adversary, "
                             "mixup or band masking")
        model = build_ensemble(params.n_mfcc, params.frames_per_window, members=tricks.members,
                               blur_pool=tricks.blur_pool)
        # every member's output is scored against the label (Keras's AUC needs the shapes equal)
        y, val = np.repeat(y[:, None], tricks.members, axis=1), (val[0], np.repeat(val[1][:, None], tricks.members, axis=1))
    else:
        model = build_model(params.n_mfcc, params.frames_per_window, mix_style=tricks.mix_style,
                            n_sources=int(max(s.max() for s in sources)) + 1 if adversary else 0,
                            adversary_strength=strength, blur_pool=tricks.blur_pool)
    if adversary:  # two outputs: the label's loss and metric by name, the source's loss beside it
        loss = {"p_abnormal": loss, "source": "sparse_categorical_crossentropy"}
        metrics, monitor = {"p_abnormal": metrics}, "val_p_abnormal_auc"
        callbacks.append(tf.keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: strength.assign(ganin_strength(epoch / max(1, epochs - 1)))))
        y, w = {"p_abnormal": y, "source": sources[0]}, {"p_abnormal": w, "source": w}
        val = (val[0], {"p_abnormal": val[1], "source": sources[1]})
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss=loss, weighted_metrics=metrics)
    if tricks.weight_average:
        averager = weight_average_callback(model, first_averaged_epoch(epochs))
        callbacks.append(averager)
    else:
        if tricks.stop_on_sources:
            if val_records is None or adversary:
                raise ValueError("stopping on the source sets' AUC needs each validation window's recording, "
                                 "and one output (not the source adversary's two)")
            callbacks.append(source_balanced_callback(val[0], *val_records))
            monitor = "val_source_auc"
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=4,
                                                          restore_best_weights=True))
    if tricks.group_dro:
        if adversary or tricks.batched or groups is None:
            raise ValueError("group DRO needs each training window's group, and trains without the source "
                             "adversary, mixup or band masking")
        group_weights = tf.Variable(np.ones(int(groups.max()) + 1, np.float32), trainable=False)
        callbacks.insert(0, group_dro_callback(x, labels, groups, group_weights, step=tricks.group_dro, seed=seed))
        model.fit(group_weighted_batches(x, y, w, groups, group_weights, batch_size=batch_size, seed=seed),
                  validation_data=val, epochs=epochs, callbacks=callbacks, verbose=2)
    elif tricks.batched:
        if adversary:
            raise ValueError("mixup or band masking and the source adversary are not combined")
        model.fit(training_batches(x, y, w, batch_size=batch_size, seed=seed, mixup=tricks.mixup,
                                   band_mask=tricks.band_mask, n_mels=params.n_mels),
                  validation_data=val, epochs=epochs, callbacks=callbacks, verbose=2)
    else:
        model.fit(x, y, sample_weight=w, validation_data=val, epochs=epochs, batch_size=batch_size,
                  callbacks=callbacks, verbose=2, shuffle=True)
    if tricks.weight_average:
        set_trainable_weights(model, averager.average())
        remeasure_batch_norm(model, x)
        log.info("weights averaged over the last %d of %d epochs; batch-norm statistics measured again",
                 averager.count, epochs)
    return plain_network(model)


def keras_scorer(model) -> Callable[[np.ndarray], np.ndarray]:
    def score(windows: np.ndarray) -> np.ndarray:
        return model(windows[..., None], training=False).numpy().reshape(-1)
    return score


def quantize(model, representative: np.ndarray) -> bytes:
    """Full-integer int8 TFLite (int8 input and output) calibrated on ``representative``."""
    import tensorflow as tf

    def dataset():
        for window in representative:
            yield [window[None, :, :, None].astype(np.float32)]

    from model.train.network import inference_network

    converter = tf.lite.TFLiteConverter.from_keras_model(inference_network(model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def metadata_for(params: dsp.FeatureParams, threshold: float, uncertainty: float, tflite: bytes,
                 extra: dict) -> dict:
    from dsp import signal_quality as q

    return {
        "format": METADATA_FORMAT,
        "name": "heartpi-cnn",
        "labels": ["normal", "abnormal"],
        "output": "p_abnormal (sigmoid), mean over windows",
        "features": params.to_dict(),
        "analysis_rate_hz": dsp.ANALYSIS_RATE_HZ,
        "band_pass_hz": list(dsp.HEART_BAND_HZ),
        "threshold": threshold,
        "poor_signal": {"quality_thresholds": q._thresholds(), "max_window_logit_std": uncertainty},
        "tflite_sha256": sha256_bytes(tflite),
        "tflite_bytes": len(tflite),
        "software_version": software_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        **extra,
    }


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    return screening_metrics(labels, scores >= threshold, scores).to_dict()


def per_source(records: Sequence[Record], scores: np.ndarray, threshold: float) -> dict:
    out = {}
    for source in sorted({r.source for r in records}):
        idx = [i for i, r in enumerate(records) if r.source == source]
        labels = np.array([records[i].label for i in idx])
        out[source] = evaluate(labels, scores[idx], threshold)
    return out


def uncertainty_limit(windows: list[np.ndarray], score, quantile: float = 99.0) -> float:
    """Window-logit spread (the device's :func:`~model.classifier.logit_spread`) above which a
    clean validation recording would be rare (1%)."""
    spreads = [logit_spread(score(w)) for w in windows if len(w) > 1]
    return float(np.percentile(spreads, quantile)) if spreads else 1e9


def _external(args) -> list[Record]:
    """Yaseen's recordings, the device never trained on, when they are there."""
    if not (args.data / YASEEN).exists():
        return []
    external = read_labels(args.data, YASEEN)
    load_audio(external, args.data, args.cache, args.workers)
    return external


#: How the decision threshold is chosen on validation recordings: ``pooled`` maximises their
#: MAcc; ``sources`` the mean over their source sets of each set's MAcc (each stethoscope counts
#: once; pooled, two thirds of validation is training-e). :func:`model.metrics.best_threshold`.
THRESHOLD_RULES = ("pooled", "sources")


def choose_threshold(labels: np.ndarray, scores: np.ndarray, sources: Sequence[str], rule: str = "pooled") -> float:
    """The threshold ``rule`` (one of :data:`THRESHOLD_RULES`) chooses for validation recordings' scores."""
    return best_threshold(labels, scores, np.asarray(sources) if rule == "sources" else None)


def choose_and_evaluate(tflite: bytes, model, params: dsp.FeatureParams, splits: dict, *, workers: int,
                        external: Sequence[Record] = (), threshold_rule: str = "pooled") -> tuple[float, float, dict]:
    """(threshold, poor-signal limit, figures): the threshold (by ``threshold_rule``, one of
    :data:`THRESHOLD_RULES`) and the window-spread limit are chosen on the validation split with
    the int8 model the device runs, windows cut as ``params`` says (the device's windows); only
    then are the test split and the external device scored. The float model's own threshold is
    chosen the same way, for the int8 drop."""
    provisional = metadata_for(params, 0.5, 1e9, tflite, {})
    int8 = Classifier(tflite, provisional)
    validation, test = splits["validation"], splits["test"]
    val_windows = record_windows(validation, params, workers)
    val_labels = np.array([r.label for r in validation])
    val_sources = [r.source for r in validation]
    int8_val = record_scores(val_windows, int8.score_windows)
    threshold = choose_threshold(val_labels, int8_val, val_sources, threshold_rule)
    uncertainty = uncertainty_limit(val_windows, int8.score_windows)

    # The headline test figures are PhysioNet's test split alone, comparable whatever else
    # was trained on; a trained-on Yaseen gets its own row (per source).
    test_windows = record_windows(test, params, workers)
    test_labels = np.array([r.label for r in test])
    physionet = np.array([r.source != YASEEN for r in test])
    float_scores = record_scores(test_windows, keras_scorer(model))
    float_threshold = choose_threshold(val_labels, record_scores(val_windows, keras_scorer(model)), val_sources,
                                       threshold_rule)
    int8_scores = record_scores(test_windows, int8.score_windows)
    figures = {
        "split": {k: len(v) for k, v in splits.items()},
        "validation_int8": evaluate(val_labels, int8_val, threshold),
        "test_float": evaluate(test_labels[physionet], float_scores[physionet], float_threshold),
        "test_int8": evaluate(test_labels[physionet], int8_scores[physionet], threshold),
        "test_int8_per_source": per_source(test, int8_scores, threshold),
        "float_threshold": float_threshold,
        "threshold_rule": threshold_rule,
    }
    if external:
        ext_scores = record_scores(record_windows(external, params, workers), int8.score_windows)
        figures["external_yaseen2018_int8"] = evaluate(np.array([r.label for r in external]), ext_scores, threshold)
    return threshold, uncertainty, figures


def good_quality(records: Sequence[Record]) -> list[Record]:
    """The recordings not marked poor quality (``sqi`` 0); those without a mark are kept."""
    return [r for r in records if r.sqi != 0]


def train_once(train: list[Record], validation: list[Record], params: dsp.FeatureParams, *,
               versions: dict[str, list[np.ndarray]], epochs: int, seed: int, workers: int,
               tricks: Tricks = Tricks(), source_stats: Optional[SourceStats] = None):
    if tricks.skip_poor_quality:
        kept = good_quality(train)
        log.info("training without %d recordings marked poor quality", len(train) - len(kept))
        train = kept
    x, y, w = training_windows(train, versions)
    val_windows = record_windows(validation, training_params(params), workers, source_stats=source_stats)
    xv = np.concatenate(val_windows)[..., None]
    val_recording = np.repeat(np.arange(len(validation)), [len(win) for win in val_windows])  # per window
    val_labels = np.array([r.label for r in validation])
    yv = val_labels[val_recording].astype(np.float32)
    index = {name: i for i, name in enumerate(sorted({r.source for r in [*train, *validation]}))}
    val_sources = np.array([index[r.source] for r in validation], np.int32)
    sources = None
    if tricks.source_adversary:  # per-window source indices, in training_windows' order
        sources = (per_training_window(train, versions, lambda r: index[r.source]), val_sources[val_recording])
    val_records = (val_recording, val_labels, val_sources) if tricks.stop_on_sources else None
    groups = training_groups(train, versions, by=tricks.dro_groups) if tricks.group_dro else None
    log.info("training on %d windows of %d recordings, validating on %d", len(x), len(train), len(xv))
    model = fit(x, y, w, (xv, yv), params, epochs=epochs, seed=seed, tricks=tricks, sources=sources,
                val_records=val_records, groups=groups)
    return model, x


def _refused_by_quality(args: tuple[str, dsp.FeatureParams]) -> bool:
    path, params = args
    samples, rate = read_stored(path)
    return bool(dsp.judge(samples, rate, params).reasons)


def quality_refusals(records: Sequence[Record], data_dir: Path, params: dsp.FeatureParams,
                     workers: int = 2) -> dict[str, bool]:
    """Whether the device's quality gate (:func:`dsp.judge` on each recording as stored, as an
    upload is judged: stretches that are not the heart left out) answers "poor signal" whatever
    the model says: the part of the gate no training changes, computed once for every fold."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return dict(zip((r.name for r in records),
                        pool.map(_refused_by_quality, [(str(data_dir / r.name), params) for r in records],
                                 chunksize=16)))


def loso(records: list[Record], params: dsp.FeatureParams, *, versions: dict, epochs: int,
         seed: int, workers: int, tricks: Tricks = Tricks(), train_without: Sequence[str] = (),
         threshold_rule: str = "pooled", refused: Optional[dict[str, bool]] = None,
         source_stats: Optional[SourceStats] = None) -> dict:
    """Leave-one-source-out: train without a PhysioNet source set, test on all of it.
    ``train_without``: source sets no fold trains or validates on (each is still held out and
    tested in its own fold, which trains on the same sources as without the option).
    ``threshold_rule``: which of :data:`THRESHOLD_RULES` the figures use; every fold also reports
    the held-out source at each rule's threshold (``threshold_rules``). ``refused``
    (:func:`quality_refusals`): each fold also reports the held-out source as the box would
    answer it (``gated``): the recordings the quality gate or the fold model's own window
    disagreement (its limit chosen on its validation recordings, as a shipped model's is) would
    call poor signal are left out, and their share is given. ``source_stats``: every window is
    standardised by its source set's statistics (``versions`` already are), the held-out set's
    by its own."""
    results = {}
    for held_out in PHYSIONET_SOURCES:
        rest = [r for r in records if r.source != held_out and r.source not in train_without]
        test = [r for r in records if r.source == held_out]
        if not test:
            continue
        splits = split_records(rest, seed=seed, test=0.0, validation=0.15)
        model, _ = train_once(splits["train"], splits["validation"], params, versions=versions,
                              epochs=epochs, seed=seed, workers=workers, tricks=tricks, source_stats=source_stats)
        score = keras_scorer(model)
        val_labels = np.array([r.label for r in splits["validation"]])
        val_windows = record_windows(splits["validation"], params, workers, source_stats=source_stats)
        val_scores = record_scores(val_windows, score)
        val_sources = [r.source for r in splits["validation"]]
        thresholds = {rule: choose_threshold(val_labels, val_scores, val_sources, rule) for rule in THRESHOLD_RULES}
        threshold = thresholds[threshold_rule]
        labels = np.array([r.label for r in test])
        window_scores = [score(w) for w in record_windows(test, params, workers, source_stats=source_stats)]
        scores = np.array([float(np.mean(s)) for s in window_scores])  # record_scores, keeping the windows'
        results[held_out] = evaluate(labels, scores, threshold)
        if refused is not None:
            limit = uncertainty_limit(val_windows, score)
            poor = np.array([refused[r.name] or (len(s) > 1 and logit_spread(s) > limit)
                             for r, s in zip(test, window_scores)])
            results[held_out]["gated"] = {**evaluate(labels[~poor], scores[~poor], threshold),
                                          "poor_signal_share": float(poor.mean()), "uncertainty_limit": limit}
        # the same fold's model at each rule's threshold: a paired comparison of the rules
        results[held_out]["threshold_rules"] = {rule: {**evaluate(labels, scores, t), "threshold": t}
                                                for rule, t in thresholds.items()}
        target_sp = float(np.mean(val_scores[val_labels == 0] < threshold))
        results[held_out]["calibrated"] = calibrated_evaluation(labels, scores, target_sp, seed)
        log.info("LOSO %s: %s; calibrated on the new device's healthy recordings: %s", held_out,
                 {k: round(results[held_out][k], 3) for k in ("sensitivity", "specificity", "macc", "auc")},
                 {k: round(results[held_out]["calibrated"][k], 3) for k in ("sensitivity", "specificity", "macc")})
    maccs = [v["macc"] for v in results.values()]
    calibrated = [v["calibrated"]["macc"] for v in results.values()]
    summary = {"per_source": results, "mean_macc": float(np.mean(maccs)), "std_macc": float(np.std(maccs)),
               "mean_macc_calibrated": float(np.mean(calibrated)), "epochs": epochs}
    if refused is not None:
        summary["mean_macc_gated"] = float(np.mean([v["gated"]["macc"] for v in results.values()]))
        summary["mean_poor_signal_share"] = float(np.mean([v["gated"]["poor_signal_share"] for v in results.values()]))
    return summary


def calibrated_evaluation(labels: np.ndarray, scores: np.ndarray, target_specificity: float, seed: int,
                          n_calibration: int = 30) -> dict:
    """Per-device calibration (a technician's step): re-set the threshold from up to 30 known
    healthy recordings of the new device so that their specificity matches validation's,
    then evaluate on the device's *other* recordings."""
    rng = np.random.default_rng(seed)
    normals = np.flatnonzero(labels == 0)
    n_cal = min(n_calibration, len(normals) // 2)
    calibration = rng.choice(normals, n_cal, replace=False)
    rest = np.setdiff1d(np.arange(len(labels)), calibration)
    threshold = float(np.quantile(scores[calibration], min(0.99, target_specificity)))
    result = evaluate(labels[rest], scores[rest], threshold)
    result.update({"threshold": threshold, "calibration_normals": int(n_cal)})
    return result


def first_per_group(records: Sequence[Record], n: int) -> list[Record]:
    """The first ``n`` recordings of each source x label group (smoke runs)."""
    picked: dict[tuple, int] = {}
    subset = []
    for r in records:
        key = (r.source, r.label)
        if picked.get(key, 0) < n:
            picked[key] = picked.get(key, 0) + 1
            subset.append(r)
    return subset


def reevaluate(args) -> int:
    """``--reevaluate``: the model in ``args.out`` judged again with another window hop
    (``--window-hop``; every other feature setting stays the model's own, since those change
    what the network was trained to read), without training: threshold and poor-signal limit
    chosen on validation, then the test split and Yaseen scored, by :func:`choose_and_evaluate`
    as after training. The metadata keeps what training measured that this does not redo
    (leave-one-source-out, the seeds, the training data) and says what was re-evaluated when."""
    import tensorflow as tf

    metadata_file = args.out / "heartpi-cnn.json"
    old = json.loads(metadata_file.read_text())
    tflite = (args.out / "heartpi-cnn.tflite").read_bytes()
    if sha256_bytes(tflite) != old["tflite_sha256"]:
        raise SystemExit(f"{args.out}: the .tflite does not match its metadata; nothing re-evaluated")
    model = tf.keras.models.load_model(args.out / "heartpi-cnn-float.keras")
    before = dsp.FeatureParams.from_dict(old["features"])  # what the device ran, defaults filled in
    params = replace(before, window_hop_s=args.window_hop)
    seed = old["metrics"]["seed"]
    records = read_labels(args.data, "physionet2016")
    if old["metrics"].get("trained_on_yaseen2018"):
        records += read_labels(args.data, YASEEN)
    if args.subset:  # a smoke run's model, re-evaluated on the same recordings and split
        records = first_per_group(records, args.subset)
    load_audio(records, args.data, args.cache, args.workers)
    splits = split_for_model(records, seed, old["metrics"].get("train_without", ()))
    external = [] if args.subset or old["metrics"].get("trained_on_yaseen2018") else _external(args)
    threshold, uncertainty, figures = choose_and_evaluate(tflite, model, params, splits, workers=args.workers,
                                                          external=external, threshold_rule=args.threshold_rule)
    changed = {k: (getattr(before, k), v) for k, v in params.to_dict().items() if getattr(before, k) != v}
    metrics = {**old["metrics"], **figures}
    metrics.setdefault("reevaluated", []).append({
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "features_changed": {k: {"from": a, "to": b} for k, (a, b) in changed.items()},
        "threshold": {"from": old["threshold"], "to": threshold},
        "threshold_rule": {"from": old["metrics"].get("threshold_rule", "pooled"), "to": args.threshold_rule},
        "why": args.why,
        "not_redone": "leave-one-source-out (its folds' models are not kept): measured with the features "
                      "the model was trained with"})
    metadata = metadata_for(params, threshold, uncertainty, tflite,
                            {"training_data": old["training_data"], "metrics": metrics})
    metadata["created"] = old["created"]
    from model.train.card import write_card

    write_card(args.out, metadata)
    metadata_file.write_text(json.dumps(metadata, indent=1) + "\n")
    log.info("re-evaluated %s with %s: threshold %.3f (was %.3f), test int8 MAcc %.3f (was %.3f)", metadata_file,
             changed, threshold, old["threshold"], figures["test_int8"]["macc"], old["metrics"]["test_int8"]["macc"])
    return 0


#: The window lengths ``--window`` takes: one heartbeat at 60 bpm at least (the network builds at
#: a tenth of a second, but a window without a beat has nothing to score), at most a whole recording
#: of the box (``audio.record_seconds``' default).
MIN_WINDOW_S, MAX_WINDOW_S = 1.0, 20.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HEARTPI_DATA", DEFAULT_DATA)))
    parser.add_argument("--out", type=Path, default=ASSETS, help="where the .tflite, .json go")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "heartpi-train")
    parser.add_argument("--seed", type=int, default=20161)
    parser.add_argument("--init-seed", type=int, help="seed of the final model's initialisation and "
                        "shuffling only (default: --seed); the split and augmentation keep --seed, so "
                        "runs differing only here are draws of one recipe on one split")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--augment", type=int, default=3, help="augmented copies per recording (see the "
                        "model card for what each choice measured)")
    parser.add_argument("--loso", action="store_true", help="also run leave-one-source-out")
    parser.add_argument("--loso-only", action="store_true", help="only leave-one-source-out")
    parser.add_argument("--loso-epochs", type=int, default=10, help="epochs per LOSO fold")
    parser.add_argument("--subset", type=int, default=0, help="at most N recordings per source x "
                        "label (smoke runs)")
    parser.add_argument("--normalise", choices=["cmvn", "cmn", "none", "source"], default="cmvn",
                        help="per recording (cmvn: mean and variance; cmn: mean), none, or source: each "
                        "source set standardised by its own recordings' statistics, the held-out set in "
                        "LOSO by its own (a measurement: --loso-only; the box keeps no such statistics)")
    parser.add_argument("--fmin", type=float, default=dsp.FeatureParams.fmin, help="lowest mel band "
                        "edge in Hz (band-limiting ablation; the metadata records it for the device)")
    parser.add_argument("--fmax", type=float, default=dsp.FeatureParams.fmax, help="highest mel band edge in Hz")
    parser.add_argument("--n-mfcc", type=int, default=dsp.FeatureParams.n_mfcc, help="cepstral coefficients per "
                        "frame (fewer keep only the spectral envelope's coarse shape, dropping the fine detail in "
                        "which a stethoscope's resonances sit; the metadata records it for the device)")
    parser.add_argument("--compression", choices=dsp.features.COMPRESSIONS, default="log",
                        help="how mel power becomes the cepstra's input: log (MFCCs, as shipped) or pcen "
                        "(per-channel energy normalisation: each band over its own recent average, "
                        "root-compressed; the metadata records it for the device)")
    parser.add_argument("--median-padding", type=float, default=0.0, metavar="FACTOR",
                        help="add FACTOR x each mel band's median power before the log (0: off; "
                             "see dsp.features.pad_noise_floor)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--resonance", action=argparse.BooleanOptionalAction, default=True,
                        help="augmentation also rings a random resonance (chest piece, tubing, phone "
                        "body) in half the chains (default: yes; LOSO 0.595 vs 0.557-0.570 without)")
    parser.add_argument("--grain", action="store_true", help="half the augmentation chains end rounded to "
                        "6-12 bits between silence and the peak (a coarse converter, or a capture gain set low)")
    parser.add_argument("--mix-style", action="store_true", help="MixStyle after the first two "
                        "convolution blocks while training (mixes windows' channel statistics "
                        "across the batch; the shipped network is unchanged in shape)")
    parser.add_argument("--source-adversary", action="store_true", help="a domain-adversarial head "
                        "(gradient reversal) that tries to name the source set from the pooled features "
                        "while training; the shipped network is unchanged in shape")
    parser.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="mixup between the "
                        "windows of a batch while training, blend weights ~ Beta(ALPHA, ALPHA) (0: off)")
    parser.add_argument("--band-mask", type=int, default=0, metavar="BANDS", help="mask a random run of "
                        "0 to BANDS adjacent mel bands of each training window (0: off; SpecAugment's "
                        "frequency masking, done on the MFCCs)")
    parser.add_argument("--window", type=float, default=dsp.FeatureParams.window_s, metavar="SECONDS",
                        help="length of the windows the network scores (a longer one holds more cardiac cycles, "
                        "so a murmur or an irregular beat recurs within it; the metadata records it for the device)")
    parser.add_argument("--window-hop", type=float, default=DEVICE_WINDOW_HOP_S, metavar="SECONDS",
                        help="how often the device scores a window (metadata; training windows stay every "
                             f"{TRAINING_WINDOW_HOP_S:g} s)")
    parser.add_argument("--threshold-rule", choices=THRESHOLD_RULES, default="pooled",
                        help="how validation chooses the decision threshold: pooled, its recordings' MAcc; "
                        "sources, the mean over its source sets of their MAcc (each stethoscope counts once). "
                        "With --reevaluate: re-chosen for the model in --out")
    parser.add_argument("--reevaluate", action="store_true", help="no training: choose the threshold and "
                        "poor-signal limit of the model in --out again on validation with --window-hop (its "
                        "other feature settings stay its own), score the test split and Yaseen, and rewrite "
                        "its metadata and model card (the .tflite is unchanged)")
    parser.add_argument("--why", default="", help="with --reevaluate: why, and what decided it, for the "
                        "model card")
    parser.add_argument("--blur-pool", action=argparse.BooleanOptionalAction, default=True,
                        help="anti-aliased pooling: max-pool densely, low-pass [1, 2, 1] / 4, then keep every "
                        "other step (Zhang 2019), so a window's score hardly depends on which analysis frame the "
                        "sound starts at (default: yes, the shipped network; --no-blur-pool is the network "
                        "shipped until 2026-11-30)")
    parser.add_argument("--skip-poor-quality", action=argparse.BooleanOptionalAction, default=True,
                        help="train without the recordings PhysioNet marked poor quality (REFERENCE-SQI 0); "
                        "validation, test and held-out sources keep them (default: yes, since 2026-11-30; "
                        "--no-skip-poor-quality trains on them too, as every model shipped before)")
    parser.add_argument("--weight-average", action=argparse.BooleanOptionalAction, default=False,
                        help="train every epoch (no early stopping) and ship the average of the weights after "
                        "each epoch from the first 30%% on, batch-norm statistics measured again (SWA); "
                        "see model/train/averaging.py")
    parser.add_argument("--members", type=int, default=3, help="train this many narrow networks (widths / "
                        "sqrt(members)) side by side and ship their averaged logit as one int8 file (a deep "
                        "ensemble; see model/train/ensemble.py; default 3 since the ensemble of 2026-11-30; "
                        "1: one network, as every model shipped before it and every ablation row below it)")
    parser.add_argument("--short-crops", type=int, default=0, metavar="N", help="each training version of a "
                        "recording also gives N windows of a random 1.2-4 s stretch of it, normalised alone and "
                        "tiled, as the device treats short clips from other stethoscopes and phone apps (0: off; "
                        "tools/eval_short_clips.py measures what it does)")
    parser.add_argument("--stop-on-sources", action="store_true", help="early stopping keeps the epoch "
                        "with the best mean over validation source sets of their recordings' AUC (each "
                        "stethoscope counts once) instead of the pooled windows' AUC (training-e's device "
                        "is two thirds of them)")
    parser.add_argument("--group-dro", type=float, default=0.0, metavar="STEP", help="group DRO, per epoch: "
                        "each source x class group's weight times exp(STEP x its training loss) after every epoch, "
                        "so the groups the network serves worst count for more (0: off; Sagawa et al. 2020)")
    parser.add_argument("--dro-groups", choices=DRO_GROUPS, default="source-class", help="with --group-dro: "
                        "weigh each source set's normal and abnormal recordings apart (source-class), or each "
                        "source set as a whole (source: its classes stay balanced within it, so the weights follow "
                        "stethoscopes, not the operating point)")
    parser.add_argument("--train-without", action="append", default=[], choices=PHYSIONET_SOURCES,
                        metavar="SOURCE", help="a PhysioNet source set neither trained nor validated on "
                        "(repeatable); the test split keeps its recordings, so they test an unheard device, "
                        "and in --loso it is still held out in its own fold (training-e's normal and abnormal "
                        "recordings differ in the recording chain itself: tools/eval_source_confounds.py)")
    parser.add_argument("--with-yaseen", action="store_true", help="also train on yaseen2018 (split "
                        "like a seventh source; it then stops being an unseen-device test)")
    args = parser.parse_args(argv)
    if args.short_crops < 0:
        parser.error("--short-crops must be 0 or more")
    if args.members < 1:
        parser.error("--members must be at least 1")
    if not MIN_WINDOW_S <= args.window <= MAX_WINDOW_S:
        parser.error(f"--window must be {MIN_WINDOW_S:g} to {MAX_WINDOW_S:g} seconds (at least one heartbeat at "
                     f"60 bpm; at most the box's {MAX_WINDOW_S:g} s recording)")
    if not 0 < args.window_hop <= args.window:
        parser.error("--window-hop must be above 0 and at most --window (windows that leave gaps skip heart sounds)")
    if not 2 <= args.n_mfcc <= dsp.FeatureParams.n_mels:
        parser.error(f"--n-mfcc must be 2 to {dsp.FeatureParams.n_mels} (the mel bands)")
    if args.normalise == "source" and not (args.loso_only and not args.train_without and not args.with_yaseen):
        parser.error("--normalise source is a leave-one-source-out measurement: add --loso-only "
                     "(without --train-without or --with-yaseen; the box keeps no per-stethoscope statistics)")
    if args.stop_on_sources and args.weight_average:
        parser.error("--stop-on-sources chooses an epoch to stop at; --weight-average never stops early")
    if args.stop_on_sources and args.source_adversary:
        parser.error("--stop-on-sources scores the label alone; --source-adversary adds a second output")
    if args.group_dro < 0:
        parser.error("--group-dro must be 0 or more")
    if args.group_dro and (args.source_adversary or args.mixup or args.band_mask):
        parser.error("--group-dro trains without --source-adversary, --mixup or --band-mask")
    if args.members > 1 and (args.mix_style or args.source_adversary or args.mixup or args.band_mask):
        parser.error("--mix-style, --source-adversary, --mixup and --band-mask train one network: "
                     "add --members 1 (as their ablation rows were run)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(args.workers)
    tf.config.threading.set_intra_op_parallelism_threads(args.workers)
    tf.config.experimental.enable_op_determinism()
    started = time.time()
    by_source = args.normalise == "source"
    params = dsp.FeatureParams(n_mfcc=args.n_mfcc, normalise="none" if by_source else args.normalise,
                               fmin=args.fmin, fmax=args.fmax,
                               median_padding=args.median_padding, window_s=args.window,
                               window_hop_s=args.window_hop, compression=args.compression)
    if args.reevaluate:
        return reevaluate(args)

    records = read_labels(args.data, "physionet2016")
    extra = read_labels(args.data, YASEEN) if args.with_yaseen else []
    if args.subset:
        records, extra = first_per_group(records, args.subset), first_per_group(extra, args.subset)
    load_audio(records, args.data, args.cache, args.workers)
    log.info("loaded %d PhysioNet recordings in %.0f s", len(records), time.time() - started)
    if extra:  # a seventh source, split like the others; cached apart so PhysioNet's cache stays valid
        load_audio(extra, args.data, args.cache, args.workers)
        records += extra
    init_seed = args.seed if args.init_seed is None else args.init_seed
    report: dict = {"seed": args.seed, "augmentations": args.augment, "resonance": args.resonance}
    if args.grain:
        report["grain"] = True
    if args.short_crops:
        report["short_crops"] = args.short_crops
    if init_seed != args.seed:
        report["init_seed"] = init_seed
    tricks = Tricks(mix_style=args.mix_style, source_adversary=args.source_adversary, mixup=args.mixup,
                    band_mask=args.band_mask, blur_pool=args.blur_pool,
                    skip_poor_quality=args.skip_poor_quality, weight_average=args.weight_average,
                    members=args.members, stop_on_sources=args.stop_on_sources, group_dro=args.group_dro,
                    dro_groups=args.dro_groups)
    report.update({name: value for name, value in asdict(tricks).items()
                   if value and not (name == "members" and value == 1) and not (name == "dro_groups" and not tricks.group_dro)})
    if args.train_without:
        report["train_without"] = sorted(args.train_without)
    splits = split_for_model(records, args.seed, args.train_without)
    train_pool = ([r for r in records if r.source not in args.train_without] if (args.loso or args.loso_only)
                  else splits["train"])
    if tricks.skip_poor_quality:  # no training windows for what no fold trains on
        train_pool = good_quality(train_pool)
    versions = training_versions(train_pool, training_params(params), n_aug=args.augment, seed=args.seed,
                                 workers=args.workers, resonance=args.resonance, grain=args.grain,
                                 short_crops=args.short_crops)
    log.info("features of %d recordings ready after %.0f s", len(versions), time.time() - started)
    source_stats = None
    if by_source:
        source_stats = source_statistics(train_pool, versions)
        source_of = {r.name: r.source for r in train_pool}
        versions = {name: [standardised(v, source_stats[source_of[name]]) for v in vs] for name, vs in versions.items()}
        report["normalise"] = "source"
    if args.loso or args.loso_only:
        report["loso"] = loso(records, params, versions=versions, epochs=args.loso_epochs,
                              seed=args.seed, workers=args.workers, tricks=tricks,
                              train_without=args.train_without, threshold_rule=args.threshold_rule,
                              refused=quality_refusals(records, args.data, params, args.workers),
                              source_stats=source_stats)
        log.info("LOSO mean MAcc %.3f +- %.3f", report["loso"]["mean_macc"], report["loso"]["std_macc"])
        if args.loso_only:
            print(json.dumps(report["loso"], indent=1))
            return 0

    model, x_train = train_once(splits["train"], splits["validation"], params, versions=versions,
                                epochs=args.epochs, seed=init_seed, workers=args.workers, tricks=tricks)
    rng = np.random.default_rng(args.seed)
    representative = x_train[rng.choice(len(x_train), min(500, len(x_train)), replace=False), ..., 0]
    tflite = quantize(model, representative)
    threshold, uncertainty, figures = choose_and_evaluate(
        tflite, model, params, splits, workers=args.workers,
        external=[] if extra or args.subset else _external(args), threshold_rule=args.threshold_rule)
    report.update(figures)
    report["trained_on_yaseen2018"] = bool(extra)
    report["training_seconds"] = round(time.time() - started)
    metadata = metadata_for(params, threshold, uncertainty, tflite, {
        "training_data": {
            "dataset": "PhysioNet/CinC Challenge 2016 training set (training-a..f), 80% subset in "
                       "../shared/data; labels -1 normal, 1 abnormal" + (
                           "; and Yaseen et al. 2018 (N normal; MR, MS, MVP abnormal)" if extra else ""),
            "split": "by recording, stratified by source set and label, seed %d: 65/15/20" % args.seed,
            "augmentation": ((f"{args.augment} random recording chains per recording (EQ, "
                             + ("resonance, " if args.resonance else "")
                             + "band limits, noise, gain, clock" + (", grain" if args.grain else "") + ")")
                            if args.augment else "none")
                            + ("; MixStyle in training" if args.mix_style else "")
                            + ("; source-adversarial head in training" if args.source_adversary else "")
                            + (f"; mixup Beta({args.mixup:g}, {args.mixup:g})" if args.mixup else "")
                            + (f"; up to {args.band_mask} mel bands masked" if args.band_mask else "")
                            + ("; weights averaged over the later epochs" if args.weight_average else "")
                            + (f"; group DRO over {args.dro_groups} groups, step {args.group_dro:g} per epoch"
                               if args.group_dro else "")
                            + (f"; {args.short_crops} windows of short 1.2-4 s stretches (tiled) per version"
                               if args.short_crops else ""),
            **({"excluded_from_training": "recordings PhysioNet marked poor quality (REFERENCE-SQI 0)"}
               if args.skip_poor_quality else {}),
            **({"sources_not_trained_on": sorted(args.train_without)} if args.train_without else {}),
            "not_used_for_training": ("nothing: yaseen2018 split 65/15/20 like a seventh source" if extra
                                      else "yaseen2018 (external device test only)"),
        },
        "metrics": report,
    })
    args.out.mkdir(parents=True, exist_ok=True)
    model_file = args.out / "heartpi-cnn.tflite"
    model_file.write_bytes(tflite)
    # The float model is kept beside it only to check int8 fidelity and for the benchmark's
    # reference path; it is not packaged for devices.
    model.save(args.out / "heartpi-cnn-float.keras")
    from model.train.card import write_card

    write_card(args.out, metadata)
    (args.out / "heartpi-cnn.json").write_text(json.dumps(metadata, indent=1) + "\n")
    log.info("wrote %s (%d bytes); test int8 MAcc %.3f, float %.3f; %.0f s in all", model_file,
             len(tflite), report["test_int8"]["macc"], report["test_float"]["macc"], time.time() - started)
    return 0
