"""A smoke training run on a tiny subset proves the pipeline works end to end (not the
full training, which takes minutes and is reproduced with `python -m model.train`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import reference_wavs
from tests.signals import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_smoke_training_run_produces_a_loadable_int8_model(tmp_path):
    pytest.importorskip("tensorflow")
    if not (SHARED_DATA / "physionet2016" / "labels.csv").exists():
        pytest.skip("../shared/data not present")
    # --with-yaseen: the optional seventh source's path too (its records join every split);
    # --n-mfcc 12: a feature setting other than the shipped one reaches the device through the metadata;
    # --train-without training-f: a source set kept out of training and validation, not out of the test;
    # --compression pcen: the other way of compressing mel power, also carried to the device;
    # --window 2.5: another window length, which sets the network's input and the device's windows
    # --loso: every fold, with the held-out source also judged as the box would (quality gate)
    result = subprocess.run([sys.executable, "-m", "model.train", "--subset", "4", "--epochs", "1",
                             "--augment", "1", "--with-yaseen", "--n-mfcc", "12", "--train-without", "training-f",
                             "--compression", "pcen", "--window", "2.5", "--loso", "--loso-epochs", "1",
                             "--out", str(tmp_path),
                             "--cache", str(tmp_path / "cache")],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    from model import Classifier

    classifier = Classifier.load(tmp_path / "heartpi-cnn.tflite")
    meta = json.loads((tmp_path / "heartpi-cnn.json").read_text())
    assert meta["metrics"]["split"]["test"] > 0 and 0 < meta["threshold"] < 1
    assert meta["metrics"]["trained_on_yaseen2018"] and "yaseen2018" in meta["metrics"]["test_int8_per_source"]
    # the headline test figures stay PhysioNet's alone
    physionet_test = sum(v["n_abnormal"] + v["n_normal"] for k, v in meta["metrics"]["test_int8_per_source"].items()
                         if k.startswith("training-"))
    assert meta["metrics"]["test_int8"]["n_abnormal"] + meta["metrics"]["test_int8"]["n_normal"] == physionet_test
    assert "Trained on as a seventh source" in (tmp_path / "MODEL_CARD.md").read_text()
    assert classifier._input["dtype"] == np.int8
    assert meta["features"]["n_mfcc"] == 12 and tuple(classifier._input["shape"])[1] == 12
    assert meta["features"]["compression"] == classifier.params.compression == "pcen"
    assert meta["features"]["window_s"] == 2.5 and tuple(classifier._input["shape"])[2] == 156  # 2.5 s of 16 ms frames
    assert "cepstra of PCEN" in (tmp_path / "MODEL_CARD.md").read_text()
    assert classifier.classify_file(reference_wavs()[0]).windows > 0
    assert (tmp_path / "heartpi-cnn.tflite").stat().st_size <= 64 * 1024
    assert meta["features"]["window_hop_s"] == 1.5 and meta["metrics"]["blur_pool"] is True  # as shipped
    assert meta["metrics"]["skip_poor_quality"] is True  # as shipped, and the card says so
    assert meta["metrics"]["members"] == 3 and "3 networks trained side by side" in (tmp_path / "MODEL_CARD.md").read_text()
    assert "REFERENCE-SQI 0" in meta["training_data"]["excluded_from_training"]
    assert "Not trained on: recordings PhysioNet marked" in (tmp_path / "MODEL_CARD.md").read_text()
    assert meta["training_data"]["sources_not_trained_on"] == meta["metrics"]["train_without"] == ["training-f"]
    assert "Neither trained nor validated on: training-f" in (tmp_path / "MODEL_CARD.md").read_text()
    assert meta["metrics"]["test_int8_per_source"]["training-f"]["n_normal"] > 0  # still tested
    assert sum(meta["metrics"]["split"].values()) < 7 * 2 * 4  # 7 sources x 2 labels x 4: training-f's train part left out
    loso = meta["metrics"]["loso"]
    assert set(loso["per_source"]) == {f"training-{c}" for c in "abcdef"}  # f too: held out, never trained on
    for source, fold in loso["per_source"].items():
        gated, n = fold["gated"], fold["n_abnormal"] + fold["n_normal"]
        kept = gated["n_abnormal"] + gated["n_normal"]
        assert kept == round((1 - gated["poor_signal_share"]) * n) and kept <= n, source
        assert gated["uncertainty_limit"] > 0
    assert 0 <= loso["mean_poor_signal_share"] <= 1 and 0 <= loso["mean_macc_gated"] <= 1
    assert "with the box's quality gate" in (tmp_path / "MODEL_CARD.md").read_text()

    # --reevaluate: the same model judged with other windows, no training; the .tflite is untouched
    tflite = (tmp_path / "heartpi-cnn.tflite").read_bytes()
    # (and the threshold chosen with each validation source set counted once)
    result = subprocess.run([sys.executable, "-m", "model.train", "--reevaluate", "--window-hop", "0.752",
                             "--threshold-rule", "sources",
                             "--subset", "4", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((tmp_path / "heartpi-cnn.json").read_text())
    assert (tmp_path / "heartpi-cnn.tflite").read_bytes() == tflite and again["tflite_sha256"] == meta["tflite_sha256"]
    assert again["features"]["window_hop_s"] == 0.752 and again["created"] == meta["created"]
    (event,) = again["metrics"]["reevaluated"]
    assert event["features_changed"] == {"window_hop_s": {"from": 1.5, "to": 0.752}}
    assert event["threshold"] == {"from": meta["threshold"], "to": again["threshold"]}
    assert event["threshold_rule"] == {"from": "pooled", "to": "sources"}
    assert meta["metrics"]["threshold_rule"] == "pooled" and again["metrics"]["threshold_rule"] == "sources"
    assert again["metrics"]["split"] == meta["metrics"]["split"]  # the same recordings, the same split
    assert "## Re-evaluated" in (tmp_path / "MODEL_CARD.md").read_text()
    assert "window_hop_s 1.5 → 0.752, threshold chosen pooled → sources" in (tmp_path / "MODEL_CARD.md").read_text()
    assert Classifier.load(tmp_path / "heartpi-cnn.tflite").params.frames_per_hop == 47


def test_record_split_never_puts_a_recording_in_two_splits():
    from model.train.dataset import Record, split_records

    records = [Record(f"x/{s}{i}", i % 3 == 0, s, 1) for s in "abc" for i in range(40)]
    splits = split_records(records, seed=1)
    names = [r.name for part in splits.values() for r in part]
    assert len(names) == len(set(names)) == len(records)
    again = split_records(list(reversed(records)), seed=1)
    assert [r.name for r in again["test"]] == [r.name for r in splits["test"]]  # deterministic
    for source in "abc":
        assert any(r.source == source for r in splits["test"])


def test_augmentation_keeps_length_scale_and_finiteness():
    from model.train.augment import augment
    from tests.signals import heart_sounds

    y = heart_sounds(70, 10.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        for resonance in (False, True):
            out = augment(y, rng, resonance=resonance)
            assert np.all(np.isfinite(out)) and 0.85 * y.size < out.size < 1.15 * y.size


def test_short_crop_is_a_stretch_of_yaseen_like_length_inside_the_recording():
    from model.train.augment import RATE, SHORT_CLIP_SECONDS, short_crop

    rng = np.random.default_rng(5)
    x = np.arange(20 * RATE, dtype=np.float32)
    lengths = []
    for _ in range(200):
        clip = short_crop(x, rng)
        assert np.array_equal(clip, x[int(clip[0]):int(clip[0]) + clip.size])  # one contiguous stretch
        lengths.append(clip.size / RATE)
    low, high = SHORT_CLIP_SECONDS
    assert low - 1e-3 <= min(lengths) < low + 0.3 and high - 0.3 < max(lengths) <= high + 1e-3
    assert {int(short_crop(x, rng)[0]) for _ in range(20)}.__len__() > 15  # starts spread, not one place
    short = x[: RATE]
    assert short_crop(short, rng) is short  # shorter than any clip: the whole recording


def test_short_crops_add_tiled_clip_windows_and_leave_the_other_windows_alone():
    import dsp
    from model.train.pipeline import _windows_of, training_params
    from tests.signals import heart_sounds

    audio = heart_sounds(70, 25.0)
    params = training_params(dsp.FeatureParams())
    without = _windows_of((audio, params, 2, 123, True, False, 0))
    with_crops = _windows_of((audio, params, 2, 123, True, False, 2))
    assert len(without) == len(with_crops) == 3  # the recording and its 2 chains
    for plain, cropped in zip(without, with_crops):
        assert np.array_equal(cropped[: len(plain)], plain)  # same versions, same windows
        extra = len(cropped) - len(plain)
        assert 2 <= extra <= 4 and cropped.shape[1:] == plain.shape[1:]  # a clip tiles into 1 or 2 windows
        assert not any(np.array_equal(w, p) for w in cropped[len(plain):] for p in plain)
    again = _windows_of((audio, params, 2, 123, True, False, 2))
    assert all(np.array_equal(a, b) for a, b in zip(again, with_crops))  # seeded: reproducible


def test_grain_rounds_half_the_chains_and_leaves_the_others_as_they_were():
    """--grain: a chain with grain is the chain without it, then rounded to 6-12 bits at its peak
    (or left alone, half the time); the random draws before it are unchanged."""
    from model.train.augment import augment, random_grain
    from tests.signals import heart_sounds

    y = heart_sounds(70, 10.0)
    rounded = 0
    for seed in range(40):
        plain = augment(y, np.random.default_rng(seed), resonance=True)
        grained = augment(y, np.random.default_rng(seed), resonance=True, grain=True)
        if np.array_equal(plain, grained):
            continue
        rounded += 1
        steps = np.unique(np.round(np.abs(grained) / np.abs(grained).max(), 6)).size
        assert 2 ** 5 <= steps <= 2 ** 11 + 1, steps  # a 6- to 12-bit grain over half the range
        peak_step = np.abs(plain).max() / 2 ** 5
        assert np.abs(grained - plain).max() <= peak_step / 2 * 1.001
    assert 10 <= rounded <= 30
    assert not random_grain(np.zeros(10, np.float32), np.random.default_rng(0)).any()


def test_random_resonance_rings_one_band_and_leaves_the_rest():
    from model.train.augment import RATE, random_resonance

    rng = np.random.default_rng(3)
    x = rng.standard_normal(20 * RATE).astype(np.float32)
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    for _ in range(10):
        y = random_resonance(x, rng)
        assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
        gain_db = 20 * np.log10(np.abs(np.fft.rfft(y)) / np.abs(np.fft.rfft(x)))
        smooth = np.convolve(gain_db, np.ones(101) / 101, mode="same")
        ringing = (freqs > 30) & (freqs < 600)
        assert np.max(np.abs(smooth[ringing])) > 1.0  # a peak or a notch in the resonance range
        assert abs(np.median(smooth[freqs > 800])) < 1.0  # far above it, the sound is left alone
        assert np.max(np.abs(smooth)) < 14.0


def test_metrics_and_threshold():
    from model.metrics import best_threshold, screening_metrics, wilson_interval

    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.4, 0.2, 0.1, 0.1, 0.05])
    m = screening_metrics(labels, scores >= 0.5, scores)
    assert m.sensitivity == pytest.approx(2 / 3) and m.specificity == 1.0 and m.auc == pytest.approx(14 / 15)
    assert best_threshold(labels, scores) == pytest.approx(0.25)  # Se 1, Sp 0.8: MAcc 0.9
    low, high = wilson_interval(8, 10)
    assert 0.49 < low < 0.8 < high < 0.95


def test_a_threshold_chosen_per_source_counts_each_stethoscope_once():
    """A large source set separable at 0.5 with its abnormal scores spread to 1, and a small one
    whose normals score 0.6-0.7: pooled, the large set decides (0.48, the small set's normals all
    referred); with sources counted once the threshold moves above the small set's normals.
    Sources holding one class only cannot be judged and are left out."""
    from model.metrics import best_threshold
    from model.train.pipeline import choose_threshold

    big = (np.linspace(0.0, 0.45, 50), np.linspace(0.5, 1.0, 50))
    small = (np.linspace(0.6, 0.7, 5), np.linspace(0.8, 0.9, 5))
    scores = np.concatenate([*big, *small])
    labels = np.concatenate([np.zeros(50), np.ones(50), np.zeros(5), np.ones(5)])
    sources = np.array(["big"] * 100 + ["small"] * 10)
    pooled = best_threshold(labels, scores)
    by_source = best_threshold(labels, scores, sources)
    assert 0.45 < pooled < 0.5 and 0.7 < by_source < 0.72
    assert choose_threshold(labels, scores, list(sources)) == pooled
    assert choose_threshold(labels, scores, list(sources), "sources") == by_source
    one_class = np.concatenate([sources, ["normals only"] * 3])
    assert best_threshold(np.concatenate([labels, [0, 0, 0]]), np.concatenate([scores, [0.99] * 3]),
                          one_class) == by_source
    with pytest.raises(ValueError, match="no group holds both classes"):
        best_threshold(np.zeros(4), np.arange(4.0), np.array(["a", "a", "b", "b"]))


def test_model_file_does_not_depend_on_models_built_before_it():
    """Leave-one-source-out builds six models before the shipped one; a run without it
    builds none. The int8 file (hence its sha256) must be the same either way, so every
    layer is named rather than numbered by Keras's per-process counter."""
    tf = pytest.importorskip("tensorflow")
    from model.train.network import build_model
    from model.train.pipeline import quantize

    representative = np.random.default_rng(0).standard_normal((8, 13, 40)).astype(np.float32)
    files = []
    for _ in range(2):
        tf.keras.utils.set_random_seed(1)
        files.append(quantize(build_model(13, 40), representative))
    assert files[0] == files[1]


def test_blur_pooling_makes_scores_depend_less_on_the_starting_frame_and_ships_in_int8():
    """Anti-aliased pooling adds no trained weights, converts to fast int8 operations, and (for any
    weights: here three random initialisations) moves a window's score less when the sound
    starts 1..7 frames later, relative to how much scores differ between recordings."""
    tf = pytest.importorskip("tensorflow")
    from model.runtime import make_interpreter
    from model.train.network import build_model, inference_network
    from model.train.pipeline import quantize

    frames, n_mfcc = 94, 13
    recordings = np.random.default_rng(0).standard_normal((24, n_mfcc, frames + 7)).astype(np.float32)
    starts = np.stack([recordings[:, :, s:s + frames] for s in range(8)], axis=1).reshape(-1, n_mfcc, frames, 1)

    def start_sensitivity(model) -> float:
        logits = model(starts, training=False).numpy().reshape(len(recordings), 8)
        logits = np.log(logits / (1 - logits))
        return float(np.mean(logits.max(axis=1) - logits.min(axis=1)) / np.std(logits[:, 0]))

    for seed in (1, 2, 3):
        tf.keras.utils.set_random_seed(seed)
        plain = build_model(n_mfcc, frames)
        tf.keras.utils.set_random_seed(seed)
        blurred = build_model(n_mfcc, frames, blur_pool=True)
        assert blurred.count_params() == plain.count_params()
        assert start_sensitivity(blurred) < 0.6 * start_sensitivity(plain), seed
    # the int8 file is converted from the export form: the same scores (layer lengths 94, 47
    # and 23: even and odd), as depthwise convolutions XNNPACK runs instead of int8 average pools
    exported = inference_network(blurred)
    np.testing.assert_allclose(exported(starts, training=False).numpy(), blurred(starts, training=False).numpy(),
                               rtol=0, atol=1e-5)
    assert inference_network(plain) is plain
    interpreter, _ = make_interpreter(quantize(blurred, starts[:16, ..., 0]))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "DEPTHWISE_CONV_2D" in ops and "AVERAGE_POOL_2D" not in ops, ops
    assert interpreter.get_input_details()[0]["dtype"] == np.int8


def test_mix_style_mixes_channel_statistics_in_training_only():
    """MixStyle must actually restyle windows while training (each channel's mean moves
    towards another window's) and leave inference, hence the shipped file, untouched."""
    pytest.importorskip("tensorflow")
    from model.train.network import mix_style_layer

    rng = np.random.default_rng(0)
    # 64 windows, 20 steps, 4 channels; each window its own channel means (its "device")
    x = (rng.standard_normal((64, 20, 4)) + rng.uniform(-5, 5, (64, 1, 4))).astype(np.float32)
    layer = mix_style_layer(p=1.0, alpha=0.1, seed=3)()
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    styled = np.asarray(layer(x, training=True))
    means_before, means_after = x.mean(axis=1), styled.mean(axis=1)
    moved = np.abs(means_after - means_before).max(axis=1) > 0.1
    assert moved.mean() > 0.5  # most windows took on part of another window's style
    # the shape of each window over time is kept: per channel, an affine map of the input
    for window in range(4):
        for channel in range(4):
            r = np.corrcoef(x[window, :, channel], styled[window, :, channel])[0, 1]
            assert r > 0.999


@pytest.mark.parametrize("tricks", [{"mix_style": True}, {"n_sources": 5}, {"mix_style": True, "n_sources": 3},
                                    {"mix_style": True, "blur_pool": True}])
def test_network_trained_with_training_only_parts_converts_to_the_plain_network(tricks):
    """MixStyle and the source adversary are training-only: stripping them gives the plain
    network with the same weights, the same scores and the same int8 bytes."""
    tf = pytest.importorskip("tensorflow")
    from model.train.network import TRAINING_ONLY, build_model, plain_network
    from model.train.pipeline import quantize

    tf.keras.utils.set_random_seed(2)
    trained = build_model(13, 40, adversary_strength=tf.Variable(1.0), **tricks)
    extra = [l.name for l in trained.layers if l.name.startswith(TRAINING_ONLY)]
    assert extra == (["mix_style1", "mix_style2"] if "mix_style" in tricks else []) + (
        ["reverse_gradient", "source_hidden", "source"] if "n_sources" in tricks else [])
    plain = plain_network(trained)
    assert not any(l.name.startswith(TRAINING_ONLY) for l in plain.layers)
    windows = np.random.default_rng(1).standard_normal((8, 13, 40, 1)).astype(np.float32)
    trained_scores = trained(windows, training=False)
    if isinstance(trained_scores, dict):
        assert trained_scores["source"].shape == (8, tricks["n_sources"])
        trained_scores = trained_scores["p_abnormal"]
    np.testing.assert_allclose(plain(windows, training=False).numpy(), trained_scores.numpy(),
                               rtol=1e-6, atol=1e-6)
    tf.keras.utils.set_random_seed(2)
    reference = build_model(13, 40, blur_pool=tricks.get("blur_pool", False))
    reference.set_weights(plain.get_weights())
    assert quantize(plain, windows[..., 0]) == quantize(reference, windows[..., 0])


def test_gradient_reversal_is_identity_forwards_and_flips_the_gradient():
    tf = pytest.importorskip("tensorflow")
    from model.train.network import gradient_reversal_layer

    strength = tf.Variable(0.25)
    layer = gradient_reversal_layer(strength)()
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-0.25, -0.5, -0.75]])
    strength.assign(1.0)  # the ramp updates the variable; the layer must read it each time
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x))
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-1.0, -1.0, -1.0]])


def test_ganin_schedule_rises_from_zero_towards_one():
    from model.train.pipeline import ganin_strength

    values = [ganin_strength(p) for p in np.linspace(0, 1, 11)]
    assert values[0] == 0.0 and all(b > a for a, b in zip(values, values[1:])) and 0.99 < values[-1] < 1.0


@pytest.mark.parametrize("trick", ["source_adversary", "mixup", "band_mask", "weight_average", "members",
                                   "stop_on_sources", "group_dro"])
def test_fit_with_a_training_trick_learns_the_label_and_returns_the_plain_network(trick):
    """A few epochs on windows whose label is in one coefficient's level: adversarial training,
    mixup's soft labels, or masked bands, must still learn it (AUC well above chance) and hand
    back the plain network."""
    pytest.importorskip("tensorflow")
    import dsp
    from model.train.network import TRAINING_ONLY
    from model.train.pipeline import Tricks, fit

    params = dsp.FeatureParams()
    rng = np.random.default_rng(0)
    n = 256
    x = rng.standard_normal((n, params.n_mfcc, params.frames_per_window, 1)).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.float32)
    x[:, 2] += 1.5 * y[:, None, None]
    sources = rng.integers(0, 3, n).astype(np.int32)
    tricks = {"source_adversary": Tricks(source_adversary=True), "mixup": Tricks(mixup=0.4),
              "band_mask": Tricks(band_mask=8), "weight_average": Tricks(weight_average=True),
              "members": Tricks(members=3, blur_pool=True),
              "stop_on_sources": Tricks(members=3, stop_on_sources=True),
              "group_dro": Tricks(members=3, group_dro=1.0)}[trick]
    model = fit(x, y, np.ones(n, np.float32), (x[:64], y[:64]), params, epochs=3, seed=1,
                tricks=tricks, sources=(sources, sources[:64]),
                val_records=(np.arange(64), y[:64], sources[:64]),  # each window a recording
                groups=2 * sources + y.astype(np.int32))
    assert not any(l.name.startswith(TRAINING_ONLY) or l.name == "p_members" for l in model.layers)
    assert model.output.shape[-1] == 1
    from model.metrics import auc
    assert auc(y, model(x, training=False).numpy().reshape(-1)) > 0.9


def test_source_balanced_auc_counts_each_source_set_once_and_skips_one_class_sets():
    from model.train.pipeline import source_balanced_auc

    labels = np.array([0, 1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1])
    scores = np.array([.1, .9, .2, .8, .9, .1, .8, .3, .5, .4, .3, .6, .2, .7])
    sources = np.array([0, 0, 0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0])
    # set 0 (10 recordings): 24 of 25 pairs ranked right; set 1: all wrong; set 2: one class, left out
    assert source_balanced_auc(labels, scores, sources) == pytest.approx((24 / 25 + 0.0) / 2)
    assert np.isnan(source_balanced_auc(labels[6:8], scores[6:8], sources[6:8]))


def test_source_balanced_callback_scores_recordings_as_the_device_does():
    """The value early stopping reads: windows scored by the members' averaged logit, averaged
    per recording, then the mean over source sets of their AUC."""
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from model.train.pipeline import source_balanced_auc, source_balanced_callback

    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 4)).astype(np.float32)
    inputs = tf.keras.Input((4,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, activation="sigmoid")(inputs))  # 2 "members"
    recording = np.repeat(np.arange(10), 3)
    labels, sources = np.array([0, 1] * 5), np.array([0] * 6 + [1] * 4)
    callback = source_balanced_callback(x, recording, labels, sources)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    p = model.predict(x, verbose=0).astype(np.float64)
    window = 1 / (1 + np.exp(-np.log(p / (1 - p)).mean(axis=1)))
    expected = source_balanced_auc(labels, window.reshape(10, 3).mean(axis=1), sources)
    assert logs["val_source_auc"] == pytest.approx(expected, abs=1e-9) and 0 <= expected <= 1


def test_group_dro_step_raises_the_weight_of_the_groups_served_worst():
    from model.train.pipeline import group_losses, next_group_weights

    labels = np.array([0, 0, 1, 1, 0, 1], np.float64)
    p = np.array([0.1, 0.2, 0.9, 0.4, 0.7, 0.5])
    groups = np.array([0, 0, 1, 1, 2, 2])
    expected = [-(np.log(0.9) + np.log(0.8)) / 2, -(np.log(0.9) + np.log(0.4)) / 2, -(np.log(0.3) + np.log(0.5)) / 2]
    losses = group_losses(labels, p, groups, 4)
    assert losses == pytest.approx([*expected, 0.0])  # a group without windows: no loss
    weights = next_group_weights(np.ones(4), losses, 1.0)
    assert weights.mean() == pytest.approx(1.0)
    assert np.argsort(weights).tolist() == [3, 0, 1, 2]
    assert weights[2] / weights[0] == pytest.approx(np.exp(losses[2] - losses[0]))
    assert next_group_weights(np.array([2.0, 1, 1, 0]), losses, 0.0) == pytest.approx([2.0, 1, 1, 0])
    assert np.isfinite(next_group_weights(np.ones(4), np.array([1e4, 0, 0, 0]), 1.0)).all()


def test_training_groups_name_each_windows_source_and_label_in_training_order():
    from model.train.dataset import Record
    from model.train.pipeline import training_groups, training_windows

    records = [Record(name=f"r{i}", source=source, label=label, sqi=1)
               for i, (source, label) in enumerate([("b", 1), ("a", 0), ("b", 0), ("a", 0)])]
    versions = {r.name: [np.zeros((k + 1, 3, 4), np.float32), np.zeros((2, 3, 4), np.float32)]
                for k, r in enumerate(records)}
    x, y, _ = training_windows(records, versions)
    groups = training_groups(records, versions)
    assert len(groups) == len(x) == 3 + 4 + 5 + 6
    # groups sorted by (source, label): ("a", 0) 0, ("b", 0) 1, ("b", 1) 2
    assert groups.tolist() == [2] * 3 + [0] * 4 + [1] * 5 + [0] * 6
    assert np.array_equal(y, np.array([0.0, 0.0, 1.0])[groups])
    by_source = training_groups(records, versions, by="source")  # ("a",) 0, ("b",) 1
    assert by_source.tolist() == [1] * 3 + [0] * 4 + [1] * 5 + [0] * 6
    with pytest.raises(ValueError):
        training_groups(records, versions, by="label")


def test_group_weighted_batches_read_the_group_weights_as_they_are_now():
    """The callback changes the weights between epochs; the next epoch's batches must carry them."""
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from model.train.pipeline import group_weighted_batches

    n = 20
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    y, w = (np.arange(n) % 2).astype(np.float32), np.linspace(0.5, 1.5, n).astype(np.float32)
    groups = (np.arange(n) // 5).astype(np.int32)
    weights = tf.Variable(np.ones(4, np.float32), trainable=False)
    data = group_weighted_batches(x, y, w, groups, weights, batch_size=8, seed=3)

    def epoch():
        batches = [tuple(t.numpy() for t in batch) for batch in data]
        xs, ws = np.concatenate([b[0] for b in batches]).ravel().astype(int), np.concatenate([b[2] for b in batches])
        assert sorted(xs.tolist()) == list(range(n))  # each window once per epoch
        return xs, ws

    xs, ws = epoch()
    assert ws == pytest.approx(w[xs])
    weights.assign([0.5, 1.0, 2.0, 0.5])
    xs, ws = epoch()
    assert ws == pytest.approx(w[xs] * np.array([0.5, 1.0, 2.0, 0.5])[groups[xs]])


def test_group_dro_callback_moves_weight_to_the_group_the_network_gets_wrong():
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from model.train.pipeline import group_dro_callback

    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    groups = np.repeat([0, 1, 2], 20).astype(np.int32)
    inputs = tf.keras.Input((4,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, activation="sigmoid")(inputs))
    p = model.predict(x, verbose=0).ravel()
    labels = (p > 0.5).astype(np.float32)  # the network is right about groups 0 and 1 ...
    labels[groups == 2] = 1 - labels[groups == 2]  # ... and wrong about every window of group 2
    weights = tf.Variable(np.ones(3, np.float32), trainable=False)
    callback = group_dro_callback(x, labels, groups, weights, step=2.0, seed=0, per_group=8)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    q = weights.numpy()
    assert q.mean() == pytest.approx(1.0, abs=1e-6) and q[2] > 1.5 * max(q[0], q[1])
    assert logs["worst_group_loss"] > np.log(2)
    callback.on_epoch_end(1, logs)
    assert weights.numpy()[2] > q[2]  # still wrong: more weight again


def test_mixup_blends_windows_labels_and_weights_of_one_batch_reproducibly():
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from model.train.pipeline import training_batches

    rng = np.random.default_rng(0)
    n = 40
    x = rng.standard_normal((n, 4, 6, 1)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    w = rng.random(n).astype(np.float32) + 0.5

    def first_epoch():
        tf.keras.utils.set_random_seed(5)
        return [tuple(t.numpy() for t in batch) for batch in training_batches(x, y, w, batch_size=16, mixup=0.4, seed=7)]

    batches = first_epoch()
    assert [len(b[0]) for b in batches] == [16, 16, 8]
    blended = soft = 0
    for mixed, labels, weights in batches:
        for k in range(len(mixed)):
            # each window is lam * one window of x + (1 - lam) * another, lam >= 0.5; so are its label and weight
            own = int(np.argmin([np.abs(mixed[k] - x[i]).sum() for i in range(n)]))
            found = np.allclose(mixed[k], x[own], atol=1e-6)  # paired with itself
            for other in range(n):
                diff = x[own] - x[other]
                lam = float(np.sum((mixed[k] - x[other]) * diff) / max(np.sum(diff * diff), 1e-12))
                if other != own and np.allclose(mixed[k], lam * x[own] + (1 - lam) * x[other], atol=1e-5):
                    assert 0.5 - 1e-6 <= lam <= 1.0 + 1e-6
                    assert labels[k] == pytest.approx(lam * y[own] + (1 - lam) * y[other], abs=1e-5)
                    assert weights[k] == pytest.approx(lam * w[own] + (1 - lam) * w[other], abs=1e-5)
                    found, blended = True, blended + 1
                    break
            assert found, k
        soft += int(np.sum((labels > 0) & (labels < 1)))
    assert blended > n // 2 and soft > 0
    again = first_epoch()
    assert all(np.array_equal(a, b) for first, second in zip(batches, again) for a, b in zip(first, second))


def test_band_masking_removes_a_run_of_adjacent_mel_bands_from_each_window_reproducibly():
    """Each window comes back as D diag(keep) D^T x for one run of 0..8 adjacent bands of the 32
    (found here by trying every run), its label and weight untouched, and a seeded epoch repeats."""
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from dsp.features import dct_matrix
    from model.train.pipeline import training_batches

    rng = np.random.default_rng(0)
    n, n_mfcc, n_mels, most = 48, 13, 32, 8
    x = rng.standard_normal((n, n_mfcc, 10, 1)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    w = rng.random(n).astype(np.float32) + 0.5
    d = dct_matrix(n_mfcc, n_mels).astype(np.float64)

    def first_epoch():
        tf.keras.utils.set_random_seed(5)
        return [tuple(t.numpy() for t in batch)
                for batch in training_batches(x, y, w, batch_size=16, band_mask=most, n_mels=n_mels, seed=7)]

    runs = [(start, width) for width in range(most + 1) for start in range(n_mels - width + 1)]
    widths = []
    batches = first_epoch()
    for masked, labels, weights in batches:
        for k in range(len(masked)):
            own = int(np.argmin([np.abs(y[i] - labels[k]) + np.abs(w[i] - weights[k]) for i in range(n)]))
            assert (labels[k], weights[k]) == (y[own], w[own])
            found = []
            for start, width in runs:
                keep = np.ones(n_mels)
                keep[start:start + width] = 0
                if np.allclose(masked[k, ..., 0], d @ np.diag(keep) @ d.T @ x[own, ..., 0], atol=1e-4):
                    found.append(width)
            assert found, k
            widths.append(min(found))
    assert min(widths) == 0 and max(widths) >= most - 2 and len(set(widths)) > 3
    again = first_epoch()
    assert all(np.array_equal(a, b) for first, second in zip(batches, again) for a, b in zip(first, second))
    with pytest.raises(ValueError, match="1..31 bands"):
        training_batches(x, y, w, batch_size=16, band_mask=n_mels, n_mels=n_mels, seed=7)


def test_skipping_poor_quality_recordings_trains_only_on_the_rest(monkeypatch):
    """``--skip-poor-quality`` drops recordings PhysioNet marked sqi 0 from training only:
    those without a mark stay, and validation still sees every recording."""
    import dsp
    from model.train import pipeline
    from model.train.dataset import Record

    params = dsp.FeatureParams()
    shape = (2, params.n_mfcc, params.frames_per_window)
    records = [Record("a/good", 1, "a", 1), Record("a/poor", 0, "a", 0), Record("y/unmarked", 0, "y", None)]
    versions = {r.name: [np.full(shape, i, np.float32)] for i, r in enumerate(records)}
    validation = [Record("a/poor-val", 1, "a", 0)]
    seen = {}

    def fake_fit(x, y, w, val, params, **kwargs):
        seen["train"], seen["validation"] = sorted(set(x[:, 0, 0, 0])), len(val[0])
        return "model"

    monkeypatch.setattr(pipeline, "fit", fake_fit)
    monkeypatch.setattr(pipeline, "record_windows", lambda recs, p, workers=2, source_stats=None: [np.zeros(shape, np.float32)
                                                                                 for _ in recs])
    for tricks, kept in ((pipeline.Tricks(), [0, 1, 2]), (pipeline.Tricks(skip_poor_quality=True), [0, 2])):
        pipeline.train_once(records, validation, params, versions=versions, epochs=1, seed=0, workers=1,
                            tricks=tricks)
        assert seen == {"train": kept, "validation": 2}


def test_weight_average_is_the_mean_of_the_epochs_from_the_first_averaged_one():
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from model.train.averaging import first_averaged_epoch, set_trainable_weights, weight_average_callback

    assert (first_averaged_epoch(20), first_averaged_epoch(10), first_averaged_epoch(1)) == (6, 3, 0)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    averager = weight_average_callback(model, first_epoch=2)
    with pytest.raises(ValueError, match="no epoch was averaged"):
        averager.average()
    seen = []
    for epoch in range(5):
        values = [np.full(w.shape, epoch + 10.0 * i, np.float32) for i, w in enumerate(model.trainable_weights)]
        set_trainable_weights(model, values)
        averager.on_epoch_end(epoch)
        seen.append(values)
    assert averager.count == 3
    for i, mean in enumerate(averager.average()):  # epochs 2, 3, 4 only
        np.testing.assert_allclose(mean, np.mean([seen[e][i] for e in (2, 3, 4)], axis=0))


def test_batch_norm_statistics_are_measured_again_layer_by_layer():
    """After averaging, each BatchNormalization layer's moving statistics must be its input's
    mean and variance over the windows, with the layers before it already corrected: then the
    normalised activations have mean 0 and variance 1 at every layer."""
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from model.train.averaging import remeasure_batch_norm

    rng = np.random.default_rng(3)
    inputs = tf.keras.Input((40, 4))
    x = tf.keras.layers.Conv1D(6, 3, padding="same", name="conv1")(inputs)
    x = tf.keras.layers.BatchNormalization(name="norm1")(x)
    x = tf.keras.layers.Conv1D(5, 3, padding="same", name="conv2")(x)
    normed = tf.keras.layers.BatchNormalization(name="norm2")(x)
    model = tf.keras.Model(inputs, normed)
    windows = (3.0 + 2.0 * rng.standard_normal((700, 40, 4))).astype(np.float32)
    remeasure_batch_norm(model, windows, at_most=600, batch_size=128)  # a subset, several batches
    subset = windows[np.linspace(0, 699, 600).astype(int)]
    for name in ("norm1", "norm2"):
        out = tf.keras.Model(inputs, model.get_layer(name).output)(subset, training=False).numpy()
        np.testing.assert_allclose(out.mean(axis=(0, 1)), 0.0, atol=1e-3)
        np.testing.assert_allclose(out.var(axis=(0, 1)), 1.0, atol=1e-2)


def test_an_ensemble_ships_as_one_grouped_network_with_the_members_mean_logit(tmp_path):
    """The three forms of an ensemble compute one function: the members' mean logit. The
    export form puts member m's kernels in channel group m; a member's kernels in another
    member's group, or a head that is not the mean, would change the scores. The int8 file
    fits the 64 KB budget at the shipped window size and scores like the float network."""
    pytest.importorskip("tensorflow")
    import dsp
    from model.train.ensemble import build_ensemble, member_filters, members_of
    from model.train.network import inference_network, plain_network
    from model.train.pipeline import quantize

    assert member_filters((32, 32, 48, 48), 3) == (19, 19, 28, 28) and member_filters((32,), 1) == (32,)
    params = dsp.FeatureParams()
    trained = build_ensemble(params.n_mfcc, params.frames_per_window, members=3)
    rng = np.random.default_rng(5)
    for layer in trained.layers:  # distinct members, as training makes them
        if layer.weights and layer.name.startswith("m"):
            layer.set_weights([rng.normal(1.0 if "norm" in layer.name and i in (0, 3) else 0.0, 0.1,
                                          w.shape).astype(np.float32) for i, w in enumerate(layer.get_weights())])
    windows = rng.standard_normal((16, params.n_mfcc, params.frames_per_window, 1)).astype(np.float32)
    import tensorflow as tf
    logits = tf.keras.Model(trained.input, trained.get_layer("member_logits").output)(windows).numpy()
    assert np.abs(logits).max() < 5 and np.ptp(logits, axis=1).min() > 0.05  # distinct members, unsaturated
    expected = 1 / (1 + np.exp(-logits.mean(axis=1)))
    plain, exported = plain_network(trained), inference_network(trained)
    assert members_of(exported) == 0 and exported.get_layer("conv2").groups == 3
    np.testing.assert_allclose(plain(windows).numpy().ravel(), expected, atol=1e-5)
    np.testing.assert_allclose(exported(windows).numpy().ravel(), expected, atol=1e-5)

    tflite = quantize(plain, windows[..., 0])
    assert len(tflite) <= 64 * 1024
    from model.runtime import make_interpreter

    interpreter, _ = make_interpreter(tflite)
    assert "CONV_2D" in {op["op_name"] for op in interpreter._get_ops_details()}
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = given["quantization"]
    interpreter.resize_tensor_input(given["index"], windows.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], np.clip(np.round(windows / scale + zero), -128, 127).astype(np.int8))
    interpreter.invoke()
    out_scale, out_zero = taken["quantization"]
    scores = (interpreter.get_tensor(taken["index"]).astype(np.float32).ravel() - out_zero) * out_scale
    assert np.abs(scores - expected).max() < 0.06


@pytest.mark.parametrize("options, why", [
    # the ensemble is the default; the tricks measured on one network ask for --members 1
    (["--mix-style"], "--members"), (["--mixup", "0.2"], "--members"), (["--members", "0"], "--members"),
    (["--stop-on-sources", "--weight-average"], "never stops early"),
    (["--stop-on-sources", "--members", "1", "--source-adversary"], "a second output"),
    (["--n-mfcc", "1"], "--n-mfcc must be 2 to 32"), (["--n-mfcc", "33"], "--n-mfcc must be 2 to 32"),
    (["--short-crops", "-1"], "--short-crops must be 0 or more"),
    (["--window", "0.5"], "--window must be 1 to 20 seconds"), (["--window", "25"], "--window must be 1 to 20"),
    (["--window-hop", "0"], "--window-hop must be above 0"), (["--window", "2", "--window-hop", "3"], "at most --window"),
    (["--train-without", "training-g"], "invalid choice"),
    (["--group-dro", "-1"], "--group-dro must be 0 or more"),
    (["--group-dro", "1", "--members", "1", "--mixup", "0.2"], "--group-dro trains without"),
])
def test_training_refuses_options_it_cannot_take_before_any_work(options, why, capsys):
    """At once, with the reason, not after minutes of features and a ValueError."""
    from model.train.pipeline import main

    with pytest.raises(SystemExit) as stopped:
        main(options)
    assert stopped.value.code == 2 and why in capsys.readouterr().err


def test_card_rerender_puts_each_tool_output_under_its_own_heading(tmp_path):
    """`python -m model.train.card` re-renders the shipped metadata with the tools' outputs, as
    done after every benchmark; the card files written here are a copy, not the shipped ones."""
    import shutil

    from model.classifier import ASSETS
    from model.train.card import main

    for name in ("heartpi-cnn.json", "ablations.json"):
        shutil.copy(ASSETS / name, tmp_path / name)
    outputs = {"bench": "speed-up 25.0x", "poor": "100 % of 74 caught", "short": "3 clips of 1.2-4 s each: AUC 0.9",
               "confounds": "training-e  146 + 1566  0.969 +", "resolution": "RMS -60 dBFS, 16 bit: Sp 0.889",
               "lowcut": "cut below 150 Hz: poor signal 38.6 %", "novelty": "yaseen2018 100.0 % of 800"}
    for name, text in outputs.items():
        (tmp_path / f"{name}.txt").write_text(text + "\n")
    main(["--assets", str(tmp_path),
          *[arg for name in outputs for arg in (f"--{name}", str(tmp_path / f"{name}.txt"))]])
    card = (tmp_path / "MODEL_CARD.md").read_text()
    for heading, name in (("## Speed and size", "bench"), ("## Poor signal", "poor"), ("## Short recordings", "short"),
                          ("## Labels entangled with recording chains", "confounds"),
                          ("## Quiet and coarse recordings", "resolution"),
                          ("## Recordings without the low band", "lowcut"),
                          ("## Telling an unfamiliar stethoscope", "novelty")):
        section = card.split(heading, 1)[1].split("\n## ", 1)[0]
        assert outputs[name] in section
    main(["--assets", str(tmp_path)])
    bare = (tmp_path / "MODEL_CARD.md").read_text()
    assert "## Short recordings" not in bare and "## Labels entangled" not in bare  # only when measured
    assert "## Quiet and coarse" not in bare and "## Recordings without the low band" not in bare
    assert "## Telling an unfamiliar stethoscope" not in bare


def test_source_statistics_standardise_each_source_set_by_its_own_recordings():
    """--normalise source: a source set's windows less its own per-coefficient mean, over its own
    s.d., taken from the recordings' original windows (the augmented versions do not count);
    two stethoscopes whose cepstra differ by a fixed offset and scale end up alike."""
    from model.train.dataset import Record
    from model.train.pipeline import source_statistics, standardised

    rng = np.random.default_rng(3)
    base = [rng.standard_normal((4, 10, 13)).astype(np.float32) for _ in range(6)]
    offset, scale = np.linspace(-5, 5, 13).astype(np.float32), np.linspace(0.5, 3, 13).astype(np.float32)
    records = [Record(f"a/{i}", i % 2, "training-a", 1) for i in range(3)] + \
              [Record(f"b/{i}", i % 2, "training-b", 1) for i in range(3)]
    junk = np.full((4, 10, 13), 1e3, np.float32)  # an augmented version: must not move the statistics
    versions = {r.name: [w if r.source == "training-a" else w * scale + offset, junk]
                for r, w in zip(records, base)}
    stats = source_statistics(records, versions)
    assert set(stats) == {"training-a", "training-b"}
    frames_b = np.concatenate([versions[r.name][0].reshape(-1, 13) for r in records[3:]])
    np.testing.assert_allclose(stats["training-b"][0], frames_b.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["training-b"][1], frames_b.std(axis=0), rtol=1e-5)
    a = np.concatenate([standardised(versions[r.name][0], stats["training-a"]) for r in records[:3]])
    b = np.concatenate([standardised(versions[r.name][0], stats["training-b"]) for r in records[3:]])
    for each in (a, b):
        np.testing.assert_allclose(each.reshape(-1, 13).mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(each.reshape(-1, 13).std(axis=0), 1, rtol=1e-4)
    assert a.dtype == np.float32 and a.shape == (12, 10, 13)
    # the recordings keep their differences within a source set (what per-recording CMVN removes)
    assert np.abs(a[:4].mean() - a[4:8].mean()) > 1e-3


def test_normalise_source_is_refused_outside_a_plain_leave_one_source_out_run():
    for extra in ([], ["--loso"], ["--loso-only", "--train-without", "training-e"], ["--loso-only", "--with-yaseen"]):
        result = subprocess.run([sys.executable, "-m", "model.train", "--normalise", "source", *extra],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, extra
        assert "--normalise source is a leave-one-source-out measurement" in result.stderr, extra


def test_the_leave_one_source_out_gate_refuses_what_the_device_refuses(tmp_path, classifier):
    """The LOSO figures "with the box's quality gate" and the box itself judge a recording by one
    function (dsp.judge), stretches left out: loud talking inside a good recording is not a refusal,
    a recording of nothing but room noise is."""
    import soundfile

    import dsp
    from model.train.dataset import Record, read_stored
    from model.train.pipeline import quality_refusals
    from tests.test_dsp_interruptions import _talking

    samples, rate = dsp.read_wav([p for p in reference_wavs() if p.name.startswith("normal-a")][0])
    cases = {"talked-over": samples + 3 * (_talking(samples, rate, 6.0, 3.0) - samples),
             "room": 1e-3 * np.random.default_rng(4).standard_normal(samples.size).astype(np.float32)}
    for name, audio in cases.items():
        soundfile.write(tmp_path / f"{name}.flac", np.clip(audio, -1, 1), rate, subtype="PCM_16")
    records = [Record(name=f"{name}.flac", label=0, source="training-a", sqi=1) for name in cases]
    refused = quality_refusals(records, tmp_path, classifier.params, workers=1)
    assert refused == {"talked-over.flac": False, "room.flac": True}
    device = {name: classifier.classify(*read_stored(tmp_path / f"{name}.flac")) for name in cases}
    assert device["talked-over"].label == "normal" and device["room"].label == "poor_signal"
    assert "noisy" in dsp.quality(*read_stored(tmp_path / "talked-over.flac")).reasons  # judged whole, it was refused
