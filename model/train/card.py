"""Render ``MODEL_CARD.md`` from the model's metadata (every figure comes from training).

``python -m model.train.card [--bench FILE]`` re-renders it, e.g. after a benchmark run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from model.classifier import ASSETS

SOURCES = {
    "training-a": "MITHSDB (MIT)",
    "training-b": "AADHSDB (Aalborg University; short recordings)",
    "training-c": "AUTHHSDB (Aristotle University of Thessaloniki)",
    "training-d": "UHAHSDB (Université de Haute Alsace)",
    "training-e": "DLUTHSDB (Dalian University of Technology)",
    "training-f": "SUAHSDB (Shiraz University)",
    "yaseen2018": "Yaseen et al. 2018 (8 kHz clips of 1–4 s, tiled to one window)",
}


def _pct(x: Optional[float]) -> str:
    return "–" if x is None or x != x else f"{x:.3f}"


def _ci(pair) -> str:
    return "–" if not pair or pair[0] != pair[0] else f"{pair[0]:.2f}–{pair[1]:.2f}"


def _row(name: str, m: dict) -> str:
    return (f"| {name} | {m['n_abnormal']} + {m['n_normal']} | {_pct(m['sensitivity'])} ({_ci(m['sensitivity_ci'])}) | "
            f"{_pct(m['specificity'])} ({_ci(m['specificity_ci'])}) | **{_pct(m['macc'])}** ({_ci(m['macc_ci'])}) | "
            f"{_pct(m.get('auc'))} |")


HEADER = "| set | abnormal + normal | Se (95% CI) | Sp (95% CI) | MAcc (95% CI) | AUC |\n|---|---|---|---|---|---|"


PHYSIONET = [f"training-{c}" for c in "abcdef"]


def _reevaluations(m: dict) -> list[str]:
    """What changed since training without retraining (``python -m model.train --reevaluate``)."""
    lines = []
    for event in m.get("reevaluated", []):
        changes = [f"{k} {v['from']:g} → {v['to']:g}" for k, v in event["features_changed"].items()]
        rule = event.get("threshold_rule", {})
        if rule.get("from") != rule.get("to"):
            changes.append(f"threshold chosen {rule['from']} → {rule['to']}")
        lines += [f"## Re-evaluated {event['date']}: {', '.join(changes) or 'the same settings'}",
                  "The network and its int8 file are unchanged; only the setting in this heading changed. "
                  + (event.get("why", "") + " " if event.get("why") else "")
                  + f"The threshold ({event['threshold']['from']:.3f} → {event['threshold']['to']:.3f}) and "
                  "the poor-signal limit were chosen again on validation, then the test split and the external "
                  "device were scored once: every figure above is with these settings. "
                  f"Not redone: {event['not_redone']}, and the ablation table.", ""]
    return lines


def referred_share(metrics: dict) -> float:
    """Share of a set's recordings called abnormal, from its counts, sensitivity and specificity."""
    n_abnormal, n_normal = metrics["n_abnormal"], metrics["n_normal"]
    referred = metrics["sensitivity"] * n_abnormal + (1.0 - metrics["specificity"]) * n_normal
    return referred / (n_abnormal + n_normal)


#: The tools whose output a card can carry, each under its own heading: ``--NAME FILE``.
MEASURED = {"poor": "tools/eval_poor_signal.py", "short": "tools/eval_short_clips.py",
            "confounds": "tools/eval_source_confounds.py", "resolution": "tools/eval_sample_resolution.py",
            "lowcut": "tools/eval_band_cut.py", "novelty": "tools/eval_chain_novelty.py",
            "transients": "tools/eval_transients.py"}


def render(meta: dict, bench: Optional[dict] = None, ablations: Optional[list] = None,
           measured: Optional[dict[str, str]] = None) -> str:
    """The card's Markdown; ``measured`` maps a :data:`MEASURED` name to that tool's output."""
    poor, short, confounds, resolution, lowcut, novelty, transients = ((measured or {}).get(name) for name in MEASURED)
    m = meta["metrics"]
    f = meta["features"]
    lines = [
        "# HeartPi heart-sound model card",
        "",
        "**Screening aid, not a diagnosis.** The model says whether a heart recording sounds normal or "
        "abnormal enough to refer the person to a clinician. It does not name a disease, it misses "
        "some abnormal hearts and it flags some healthy ones. A \"normal\" result never rules out "
        "heart disease.",
        "",
        "## Model",
        f"- File `heartpi-cnn.tflite`, {meta['tflite_bytes']} bytes, sha256 `{meta['tflite_sha256']}`, "
        f"created {meta['created']} by HeartPi {meta['software_version']} (`python -m model.train`, seed {m['seed']}).",
        "- Full-integer int8 TFLite (int8 input and output), runs with `ai-edge-litert` or `tflite-runtime` 2.14.",
        f"- Input: a {f['window_s']:g} s window of {f['n_mfcc']} "
        + ("cepstra of PCEN (per-channel energy normalisation, instead of the log) of mel power "
           if f.get("compression") == "pcen" else "MFCCs ")
        + f"({f['n_mels']} Slaney mel bands "
        f"{f['fmin']:g}–{f['fmax']:g} Hz, FFT {f['n_fft']}, hop {f['hop_length']} at {f['sr']} Hz) after "
        "resampling to 2 kHz and a 25–400 Hz zero-phase band-pass; MFCCs normalised per recording "
        f"({f['normalise']}). Windows every {f['window_hop_s']:g} s; the recording's score is the mean.",
        "- Network: " + (f"{m['members']} networks trained side by side from different starting weights "
                         "(a deep ensemble, each narrower: widths divided by √" + f"{m['members']}), each "
                         if m.get("members", 1) > 1 else "")
        + "4 × (1-D convolution over time, batch norm, ReLU, "
        + ("anti-aliased max-pool: dense max, [1, 2, 1] / 4 low-pass, every other step" if m.get("blur_pool")
           else "max-pool") + ") → global average"
        + (" → their logits averaged → sigmoid; in the int8 file as one network of grouped convolutions "
           if m.get("members", 1) > 1 else " → sigmoid ")
        + "(the research prototype's four convolution layers, 1-D because it trains 8× faster at equal depth).",
        f"- Decision: abnormal when mean p(abnormal) ≥ **{meta['threshold']:.3f}** (chosen on the validation "
        "split to maximise MAcc = (Se + Sp) / 2 for the int8 model).",
        "- Poor signal (no verdict, \"record again\"): silence, clipping, too short (an upload under "
        f"{meta['poor_signal']['quality_thresholds']['min_seconds']:g} s; a device recording stopped early under "
        "`audio.min_seconds`, 5 s), energy above the heart band "
        "(speech, rubbing, noise), no periodic heartbeat in the envelope, or window scores that disagree more than "
        f"{meta['poor_signal']['max_window_logit_std']:.2f} (logit standard deviation; the 99th percentile on clean "
        "validation recordings).",
        "",
        "## Data",
        f"- Training and evaluation: {meta['training_data']['dataset']}. Licence ODC-By 1.0; cite Liu et al., "
        "Physiol. Meas. 37(12):2181, 2016, Clifford et al., CinC 2016, and Goldberger et al., Circulation 101(23):e215, 2000.",
        f"- Split: {meta['training_data']['split']} ({m['split']['train']} / {m['split']['validation']} / "
        f"{m['split']['test']} recordings). Patients may have several recordings and no patient ids exist, "
        "so a record-level split is slightly optimistic: the leave-one-source-out figures below are the honest ones.",
        f"- Augmentation: {meta['training_data']['augmentation']}; training weights balance every source × class group.",
        "- Labels: PhysioNet's own (-1 normal, 1 abnormal: murmurs, valve disease, CAD and other pathology alike)."
        + (f" Not trained on: {meta['training_data']['excluded_from_training']}; validation and test keep them."
           if meta['training_data'].get("excluded_from_training") else "")
        + (f" Neither trained nor validated on: {', '.join(meta['training_data']['sources_not_trained_on'])}; "
           "the test split keeps their recordings, a device this model never heard."
           if meta['training_data'].get("sources_not_trained_on") else ""),
        ("- Trained on as a seventh source (split 65/15/20 like the others): " if m.get("trained_on_yaseen2018")
         else "- External device never trained on (but used to choose between recipes): ")
        + f"{SOURCES['yaseen2018']}; licence not stated by the authors, who ask that the paper be cited "
        "(Applied Sciences 8(12):2344).",
        "",
        "## Held-out test split (recordings never seen in training or threshold choice)",
        HEADER,
        _row("test, int8 (shipped)", m["test_int8"]),
        _row("test, float32", m["test_float"]),
    ]
    for source, metrics in m.get("test_int8_per_source", {}).items():
        lines.append(_row(f"{source}: {SOURCES.get(source, '')}", metrics))
    drop = m["test_float"]["macc"] - m["test_int8"]["macc"]
    lines += ["", f"int8 vs float32 MAcc difference on the test split: {abs(drop):.3f} (float minus int8: {drop:+.4f}).", ""]
    lines += _reevaluations(m)
    if "external_yaseen2018_int8" in m:
        lines += ["## A device never heard in training (Yaseen 2018, 8 kHz clips of 1–4 s, tiled to one window; "
                  "a selection figure, see the ablation table)",
                  HEADER, _row("yaseen2018, int8", m["external_yaseen2018_int8"]), ""]
    if "loso" in m:
        lo = m["loso"]
        gated = all("gated" in metrics for metrics in lo["per_source"].values())
        lines += ["## Leave-one-source-out (train without a PhysioNet source set, test on all of it)",
                  "The real-world case: a stethoscope the model has never heard. Threshold from the other sources' "
                  "validation recordings. *Calibrated*: the threshold re-set from up to 30 healthy recordings of the "
                  "new device (a technician's step), evaluated on that device's other recordings.", "",
                  "| held-out source | abnormal + normal | Se (95% CI) | Sp (95% CI) | MAcc (95% CI) | AUC | calibrated Se / Sp / MAcc |"
                  + (" with the box's quality gate: poor signal / Se / Sp / MAcc |" if gated else "")
                  + "\n|---|---|---|---|---|---|---|" + ("---|" if gated else "")]
        for source, metrics in lo["per_source"].items():
            cal, gate = metrics.get("calibrated", {}), metrics.get("gated", {})
            lines.append(_row(f"{source}: {SOURCES.get(source, '')}", metrics)
                         + f" {_pct(cal.get('sensitivity'))} / {_pct(cal.get('specificity'))} / {_pct(cal.get('macc'))} |"
                         + (f" {_pct(gate.get('poor_signal_share'))} / {_pct(gate.get('sensitivity'))} / "
                            f"{_pct(gate.get('specificity'))} / {_pct(gate.get('macc'))} |" if gated else ""))
        lines += ["", f"Mean LOSO MAcc **{lo['mean_macc']:.3f}** ± {lo['std_macc']:.3f} (target 0.80); with per-device "
                  f"calibration {lo.get('mean_macc_calibrated', float('nan')):.3f}. For comparison the challenge's "
                  "sample entry scored 0.59 ± 0.15 in leave-one-database-out.", ""]
        if gated:
            lines += ["*With the box's quality gate*: what a clinic with that stethoscope would see. The recordings the "
                      "box would answer \"poor signal: record again\" (the quality checks on the recording as stored, "
                      "as an upload is judged, stretches that are not the heart left out, or the fold model's windows "
                      "disagreeing beyond the limit chosen on its "
                      "validation recordings) are left out, and their share is given. Mean MAcc of the rest "
                      f"{lo['mean_macc_gated']:.3f}, mean share refused {_pct(lo['mean_poor_signal_share'])}.", ""]
        lines += ["Share of the people referred at the shipped threshold, which a device sees without any clinician "
                  "(its Device page warns when clearly more than `device.referral_alarm_share`, 0.5, are): "
                  + "; ".join(f"{source} {_pct(referred_share(metrics))}" for source, metrics in lo["per_source"].items())
                  + f" when unheard; the test split {_pct(referred_share(m['test_int8']))}, its abnormal share "
                  f"{_pct(m['test_int8']['n_abnormal'] / (m['test_int8']['n_abnormal'] + m['test_int8']['n_normal']))}.", ""]
    if ablations:
        lines += ["## What was measured to choose the recipe (leave-one-source-out MAcc)",
                  "Each variant: `python -m model.train` with the options shown (and, for the rows below the "
                  "ensemble, `--members 1`), seed 20161 unless said (test "
                  "split and Yaseen columns only for full runs). Run-to-run noise: the shipped recipe with a "
                  "second seed moved single folds by up to 0.07 and the mean by 0.013, and 1 vs 2 threads moved "
                  "folds by about 0.05, so LOSO means within about 0.03 of each other do not separate the "
                  "variants. The Yaseen device does: augmentation kept AUC 0.90 there against 0.59 without. "
                  "Because that comparison chose the shipped recipe, Yaseen is no longer an untouched test set: "
                  "its figure above is a selection figure, slightly optimistic. Training on Yaseen as well "
                  "(`--with-yaseen`) stayed inside the noise band and would spend the only device never "
                  "trained on, so it is not adopted. Adding a random resonance to half the augmentation chains "
                  "(a chest piece's, tubing's or phone's ring) was adopted by a rule written down before its full "
                  "run was looked at: LOSO mean not lower, validation MAcc within 0.02, Yaseen AUC within 0.02. "
                  "It raised the LOSO mean (0.595, and 0.585 with a second seed run afterwards, against 0.557 and "
                  "0.570 for two seeds without: small but repeated) and Yaseen AUC "
                  "(0.96 against 0.90), left validation level (MAcc 0.850 against 0.852), and then scored lower "
                  "on the test split (MAcc 0.799 against 0.845, AUC 0.88 against 0.92): a trade of some "
                  "in-distribution accuracy for robustness to unheard devices, reported rather than undone "
                  "(undoing it would choose the model on the test split). "
                  "That model could not be reproduced from a clone: its audio came from a training cache made by "
                  "an earlier front end (differences of ~1e-8; the cache is now keyed by the front end's code), "
                  "and training turns such differences into a different model. So the same recipe was run once "
                  "from a clean tree and shipped whatever its figures (a rule written before the run): it scores "
                  "lower than that earlier draw on every split (at the 1.5 s window hop it was first evaluated with: "
                  "test MAcc 0.765 against 0.799, validation 0.835 "
                  "against 0.850, Yaseen AUC 0.92 against 0.96, LOSO 0.580 against 0.595) but higher after "
                  "per-device calibration (0.660 against 0.592). Another draw of the same recipe, with the "
                  "filters' main product in float32 (inputs ~1e-7 apart), scored test MAcc 0.819: single runs of "
                  "this recipe move by about ±0.03 on every figure, more than most differences in the table. "
                  "Three runs differing only in the initialisation seed (`--init-seed`, same split; "
                  "`tools/eval_seed_ensemble.py`, float32) scored validation MAcc 0.833 / 0.861 / 0.840 and "
                  "test 0.776 / 0.807 / 0.798, but Yaseen AUC 0.917 / 0.770 / 0.867: validation does not "
                  "predict the unseen device, and averaging the three (Yaseen AUC 0.875, test 0.789) steadies "
                  "the figures without raising them. The shipped file was rewritten once more (2026-11-29) after "
                  "every layer got a fixed name: the same recipe run again from a committed tree gave weights "
                  "identical to the previous file's float model and the same figures (Yaseen AUC within 2e-5), "
                  "only the names and the sha256 changed. Quantisation was checked on validation too: "
                  "calibrating int8 on 2,000 or 8,000 training windows instead of 500 moved the recordings' "
                  "scores further from float32 (mean |Δp| 0.0058 and 0.0069 against 0.0054), so 500 stay; at the "
                  "1.5 s hop the test split's 0.011 int8-vs-float MAcc drop came from the two thresholds "
                  "validation chose (0.671 int8, 0.652 float32: int8 called 5 fewer abnormal and 10 more normal "
                  "test recordings right), not "
                  "from lost ranking (test AUC 0.862 int8, 0.861 float32). MixStyle (Zhou et al. 2021: "
                  "mixing windows' per-channel statistics across a batch after the first two convolution blocks, "
                  "training only; `--mix-style`) was tried under a rule fixed before its run (adopt only if the "
                  "LOSO mean reached 0.610, beyond the noise band, with validation and Yaseen within 0.02): LOSO "
                  "0.583 against 0.580, calibrated 0.558 against 0.660 (training-e's AUC fell to 0.45), so it "
                  "is not adopted and no final model was trained with it. A source-adversarial head (Ganin et "
                  "al. 2016: a second head names the source set from the pooled features through gradient "
                  "reversal, its strength ramped from 0 to 1; `--source-adversary`), under the same rule: LOSO "
                  "0.590, calibrated 0.598, mean AUC over the six held-out sources 0.684 against 0.701: it moved "
                  "the operating point on some sources (training-b specificity 0.35 against 0.10) but did not "
                  "restore ranking, so it is not adopted either. Its source head stayed near chance (loss "
                  "about ln 5) once the reversal was on, so the pooled features no longer named the source "
                  "set, and still the unheard source was ranked no better: what fails to transfer is not "
                  "(only) a device signature the network could drop. Twice the augmentation (`--augment 6`: "
                  "the same three chains per recording plus three more), under the same rule: LOSO 0.569, "
                  "calibrated 0.549: more of the same chains does not help; not adopted. Masking each "
                  "device's noise floor (`--median-padding 1`: every mel band's median power over the "
                  "recording added before the log, so the hiss between heart sounds looks alike on every "
                  "device), under the same rule: LOSO 0.594, calibrated 0.561, and the spread more than "
                  "doubled (0.127 against 0.058): training-a, c and d gained but training-f fell to AUC 0.35 "
                  "and training-e to 0.49, so what the quiet between heart sounds holds is signal, not only "
                  "a device's hiss; not adopted, and the stronger `--median-padding 3` was not run. Mixup "
                  "(Zhang et al. 2018; `--mixup 0.2`: each training window blended with another of its batch, "
                  "labels and weights alike, so the network also sees recording chains between the sources'), "
                  "under the same rule: LOSO 0.583, calibrated 0.614, mean AUC over the held-out sources 0.705 "
                  "against 0.701: training-a, c and e gained, d fell to specificity 0.09 and f stayed at chance "
                  "(AUC 0.52); not adopted. Masking adjacent mel bands (SpecAugment's frequency masking, "
                  "Park et al. 2019, done on the MFCCs; `--band-mask 8`: a random run of 0 to 8 of the 32 bands "
                  "removed from each training window, so a stethoscope that swallows or rings one band looks "
                  "like something the network has met), under the same rule: LOSO 0.588, the narrowest spread "
                  "yet (0.046), calibrated 0.606, mean AUC over the held-out sources 0.701 against 0.701: "
                  "training-f's ranking rose off chance (AUC 0.62 against 0.49) while training-d and e lost "
                  "(0.74 and 0.60 against 0.80 and 0.67); not adopted. Anti-aliased pooling (Zhang 2019; "
                  "`--blur-pool`, the default since 2026-11-30: max-pool densely, low-pass [1, 2, 1] / 4, then "
                  "keep every other step) was adopted by a rule fixed before its run. The network before it "
                  "pooled three times by plain stride-2 max-pooling, so its score of a window depended on "
                  "which of 8 one-frame (16 ms) alignments the sound met, and a recording's start is arbitrary "
                  "(the press of the button, a codec's start-up delay): scored every 1.5 s, a start one frame "
                  "later moved P(abnormal) by a median 0.080 over the 8 starts on validation, and the device "
                  "had to score windows every 0.368 s (23 frames, meeting all 8 alignments) to bring that to "
                  "0.021, at four times the windows. The rule: ship the anti-aliased network with windows every "
                  "1.5 s again if its LOSO mean stays at least 0.565 (0.580 less the 0.015 two seeds of one "
                  "recipe differed by), validation's median start range at 1.5 s is at most 0.030, and "
                  "validation MAcc and AUC fall by at most 0.01. Measured: LOSO 0.565 (met by 0.00004), start "
                  "range 0.018 (90th percentile 0.047; the shipped file 0.017), validation MAcc 0.847 and AUC 0.919 against 0.834 and "
                  "0.916. Its calibrated LOSO mean (0.593) and mean AUC over the held-out sources (0.642) are "
                  "below the network it replaced (0.660, 0.701) but level with a second seed of that "
                  "network's recipe (0.558, 0.642): inside the noise, not shown to be a loss. A start one "
                  "frame later still changes 8 of 388 validation verdicts (3 for the old network at 0.368 s): "
                  "recordings that sit on the threshold. The int8 file is converted from an export form of the "
                  "same network (the low-pass as a fixed depthwise convolution, the same scores to 2e-7), "
                  "because the runtime's fast path does not run int8 average pools. Training without the 290 "
                  "recordings PhysioNet's annotators marked poor quality (`--skip-poor-quality`, REFERENCE-SQI 0; "
                  "validation, test and the held-out sources keep them: the device meets such recordings and "
                  "mostly refuses them as poor signal) was adopted on 2026-11-30 by two rules fixed before their "
                  "runs. The first: LOSO mean at least 0.595 (0.565 plus the 0.03 noise band), calibrated mean "
                  "at least 0.563, and the full run's validation MAcc and AUC within 0.02 of the model it "
                  "replaced. Measured: LOSO 0.603 (training-e 0.642, AUC 0.71, against 0.460, AUC 0.48; "
                  "training-b 0.487 against 0.531), calibrated 0.599, mean AUC over the held-out sources 0.661 "
                  "against 0.642; validation MAcc 0.875 and AUC 0.941 against 0.847 and 0.919. That rule had "
                  "left out Yaseen, the one device never trained on, and there this run fell to AUC 0.622 "
                  "(specificity 0.375; the model it replaced 0.911 and 0.670). So a second rule was fixed "
                  "before more runs: ship it only if the recipe's mean Yaseen AUC over three initialisation "
                  "seeds is at least the replaced recipe's less 0.05. Measured: 0.622 / 0.895 / 0.905 (mean "
                  "0.807) against 0.911 / 0.707 / 0.868 (mean 0.829), so it shipped. The draw shipped then was "
                  "the worst of the six on Yaseen: on an unheard device, single draws of either recipe range from "
                  "good to poor, and validation does not tell which (the draw best on validation, MAcc "
                  "0.895, has Yaseen AUC 0.707). The test split, read after both decisions, gave MAcc 0.843 (AUC 0.915) against "
                  "0.766. Where a recording starts moves this network's P(abnormal) further than the "
                  "network it replaced (validation median range over 8 starts 0.029 against 0.017, 90th "
                  "percentile 0.125 against 0.047), while verdicts changed by a start one frame later stay "
                  "few (10 of 388 against 8). A second split and augmentation seed (20162), run for both recipes "
                  "after it shipped, found a smaller gain than the first: LOSO 0.582 against 0.574, calibrated "
                  "0.614 against 0.581, mean held-out AUC 0.649 against 0.627; over the two seeds about +0.02 "
                  "on each, at the edge of the noise.", "",
                  "Three narrow networks in one file (`--members 3`, a deep ensemble: each member the same four "
                  "convolution blocks with widths divided by √3, 19 / 19 / 28 / 28, trained side by side from "
                  "different starting weights on the same batches; their logits averaged; in the int8 file one "
                  "network of grouped convolutions, 58.6 KB) was adopted later on 2026-11-30 by a rule fixed "
                  "before its runs, aimed at the lottery above: over initialisation seeds 20161, 1 and 2, mean "
                  "Yaseen AUC at least 0.807 and the worst at least 0.75, mean validation AUC at least 0.907 "
                  "and MAcc at least 0.831, and LOSO mean at least 0.573. Measured: Yaseen AUC 0.841 / 0.959 / "
                  "0.888 against one network's 0.622 / 0.895 / 0.905 (specificity 0.730 / 0.940 / 0.570 against "
                  "0.375 / 0.695 / 0.625; MAcc mean 0.810 against 0.727); validation AUC 0.936 / 0.905 / 0.939 "
                  "and MAcc 0.885 / 0.808 / 0.859 against 0.941 / 0.932 / 0.908 and 0.875 / 0.867 / 0.811 (the "
                  "same means, 0.927 and 0.851); LOSO 0.599 against 0.603, inside the noise, with a higher mean "
                  "held-out AUC (0.690 against 0.661: training-c 0.97, training-e 0.55 against 0.71); with split "
                  "seed 20162, run after it shipped, 0.611 against 0.582, calibrated 0.607 against 0.614, "
                  "held-out AUC 0.678 against 0.649: the ranking gained 0.03 on both seeds. So the "
                  "ensemble makes the unheard device steadier, not the known ones better; the test split, read "
                  "after the decision, gave MAcc 0.836 and AUC 0.915 (the single network 0.843 and 0.915). "
                  "Yaseen has now chosen "
                  "between recipes three times: its figure is a selection figure. Weight averaging along one run "
                  "(`--weight-average`, SWA: no early stopping, the mean of the weights after each epoch from the "
                  "seventh of 20, batch-norm statistics measured again) was measured first under the same rule "
                  "and not adopted: its first draw scored Yaseen AUC 0.708 (the same seed without it 0.622), "
                  "below the worst-draw floor, with validation MAcc 0.873 and AUC 0.938. Training also on short "
                  "clips (`--short-crops 2`: each version of a recording also gives two windows of a random "
                  "1.2–4 s stretch, normalised alone and tiled as the device does) was measured against the "
                  "ensemble by a rule fixed before its runs and not adopted: over the same three seeds the "
                  "validation short-clip AUC (`tools/eval_short_clips.py`) was 0.845 / 0.852 / 0.891 (mean 0.863 "
                  "against 0.868; the rule asked for 0.888), whole-recording validation AUC 0.894 / 0.922 / 0.951, "
                  "and Yaseen AUC 0.871 / 0.877 / 0.748 (mean 0.832 against 0.896, the worst below the 0.75 "
                  "floor; specificity 0.570 / 0.585 / 0.265). Its LOSO run was stopped unfinished. Five members "
                  "(`--members 5`, widths 15 / 15 / 22 / 22, 64,704 bytes), by a rule fixed before its runs (Yaseen "
                  "AUC mean at least 0.896 and the worst draw at least 0.841, validation as above, LOSO at least "
                  "0.569), were not adopted either: Yaseen AUC 0.904 / 0.959 / 0.808 (specificity 0.605 / 0.855 / "
                  "0.195), validation AUC 0.911 / 0.925 / 0.938 and MAcc 0.818 / 0.839 / 0.863; no LOSO run. Seed 2 "
                  "is the weakest Yaseen draw for three members too (0.888, specificity 0.570): more members did "
                  "not end the lottery. Over 16 models of this split, validation AUC and Yaseen AUC rank opposite "
                  "ways (Spearman -0.75), and models whose early stopping restored a later epoch did worse on "
                  "Yaseen; capping training at 8 epochs (`--epochs 8 --loso-epochs 8`), by a rule fixed before its "
                  "runs (Yaseen AUC mean at least 0.916), gave Yaseen AUC 0.869 / 0.959 / 0.859 (mean 0.896, the "
                  "same as 20 epochs), validation AUC 0.940 / 0.905 / 0.920: not adopted, no LOSO run.", "",
                  "| variant | " + " | ".join(PHYSIONET) + " | LOSO mean | calibrated mean | test split | Yaseen (AUC) |",
                  "|---|" + "---|" * (len(PHYSIONET) + 4)]
        for row in ablations:
            per = row["loso"]["per_source"]
            ext = row.get("external") or {}
            lines.append(f"| {row['variant']} | " + " | ".join(_pct(per.get(s, {}).get("macc")) for s in PHYSIONET)
                         + f" | **{_pct(row['loso']['mean_macc'])}** | {_pct(row['loso'].get('mean_macc_calibrated'))} | "
                         f"{_pct((row.get('test_int8') or {}).get('macc'))} | {_pct(ext.get('macc'))} ({_pct(ext.get('auc'))}) |")
        lines.append("")
    q = meta["poor_signal"]["quality_thresholds"]
    lines += ["## Poor signal", f"Rules: silence below {20 * __import__('math').log10(q['silence_rms']):.0f} dBFS RMS; "
              f"clipping when over {100 * q['clip_fraction']:.0f} % of samples sit at the peak; heart-band (25–400 Hz) "
              f"energy per Hz less than {q['min_band_share_db']:g} dB above 400–900 Hz (on the training split speech "
              "scored below 3 dB and 99.5 % of good recordings above 10 dB); envelope autocorrelation peak below "
              f"{q['min_periodicity']:g} in the 35–200 bpm range (a clip under 3.5 s: periods up to half its "
              f"length, so two beats must fit); shorter than {q['min_seconds']:g} s (the device: its "
              "`audio.min_seconds`, 5 s)."
              + (f" Stretches that are not the heart are left out of the normalisation, of every window and of the checks "
                 f"above and the heart rate (the part the verdict hears is judged, its pieces joined), with "
                 f"0.5 s either side (`dsp/interruptions.py`; recordings of 5 s or more): the chest piece off the skin "
                 f"(the heart band's energy, averaged over 1 s, {q['dropout_db']:g} dB below the recording's median) "
                 f"and a burst of talking or rubbing (the energy outside the heart band, so averaged, "
                 f"{q['noise_burst_db']:g} dB above its median); a recording with no window free of them, or with less "
                 "than its minimum length left (the device's 5 s), is poor signal (\"lifted\" or \"noisy\")." if "dropout_db" in q and "noise_burst_db" in q else ""), ""]
    if poor:
        lines += ["Measured by `tools/eval_poor_signal.py`:", "", poor, ""]
    if short:
        lines += ["## Short recordings (tools/eval_short_clips.py)", "Other stethoscopes and phone apps often "
                  "export 1.2–4 s; each such clip is normalised alone and repeated to fill one window. Stretches of "
                  "that length cut from PhysioNet recordings, beside the same recordings whole; then stretches of "
                  "fixed lengths from the recordings of at least 20 s, so that every length is judged on the same "
                  "hearts:", "", short, ""]
    if confounds:
        lines += ["## Labels entangled with recording chains (tools/eval_source_confounds.py)", "Properties of "
                  "the raw recording with no cardiac meaning, compared between each source set's normal and "
                  "abnormal recordings. Where they tell the classes apart, the two classes were recorded "
                  "differently, and a model trained there can score well for reasons that do not carry to "
                  "another stethoscope; compare the model's AUC on the source heard and unheard:", "", confounds, ""]
    if resolution:
        lines += ["## Quiet and coarse recordings (tools/eval_sample_resolution.py)", "The same recordings stored "
                  "more coarsely: brought to a lower level on a 16-bit converter (a capture gain set low) or rounded "
                  "to fewer bits (a coarse converter or export), each classified by the device's own path. "
                  "Training-e's normal recordings are coarse as stored, so the specificity on the other source sets "
                  "is the one that shows the effect:", "", resolution, ""]
    if lowcut:
        lines += ["## Recordings without the low band (tools/eval_band_cut.py)", "Phones and some electronic "
                  "stethoscopes cut the 20-150 Hz band where the first and second heart sounds sit; training-f is "
                  "recorded that way (20-50 Hz about 20 dB below the other source sets). The same recordings "
                  "high-passed at each cut-off (40 dB per decade, as training-f's low band falls), each classified by the device's own path. The box "
                  "refuses many more as poor signal, and of the rest it misses more abnormal hearts while its "
                  "specificity holds: a low-band cut does not make healthy hearts sound abnormal, so it does not "
                  "explain training-f's lost specificity when held out:", "", lowcut, ""]
    if novelty:
        lines += ["## Telling an unfamiliar stethoscope (tools/eval_chain_novelty.py)", "A stethoscope leaves its mark "
                  "on a recording's long-term spectrum, so a device could compare each recording's spectral shape "
                  "with the training recordings' and caution a verdict from an unfamiliar one. That is worth doing "
                  "only if unfamiliar recordings are where the model fails. Measured: the external device's "
                  "recordings are all flagged, yet the model works there (its figures above); held out, training-b "
                  "and training-d sound familiar, yet the model refers most of their healthy hearts. No verdict "
                  "carries such a caution:", "", novelty, ""]
    if transients:
        lines += ["## A moment of trouble inside a recording (tools/eval_transients.py)", "In the field a recording "
                  "is rarely clean from end to end. One moment of trouble put into each test recording (a knock, "
                  "three, 2 s of rubbing, 3 s of talking, 2 s with the chest piece off the skin), each classified as "
                  "the device does and scoring every window with the quality checks judging the whole recording (as "
                  "before `dsp/interruptions.py`). Scoring every window, a lifted chest piece made the model call most "
                  "of the healthy hearts it still judged abnormal, and talking or rubbing many of them; judging the "
                  "whole recording, most rubbed and many talked-over recordings were poor signal and their heart "
                  "rates pulled. Left out of both, those stretches barely move a verdict or a heart rate, and most "
                  "such recordings get one. Knocks are left to the quality checks and the model's own uncertainty "
                  "(a knocked recording often fails the rhythm check; the ones that pass are where the model errs "
                  "more), and a lifted chest piece still ends as poor signal in one of five: the health worker's "
                  "\"quiet room, hold still\" matters:", "", transients, ""]
    if bench:
        lines += ["## Speed and size (tools/bench_model.py)", "", bench.get("text", ""), ""]
    lines += [
        "## Known failure modes",
        "- A stethoscope or phone unlike the training sources shifts the scores: specificity can collapse (many "
        "healthy people referred; the Device page warns when most people screened are referred). Check the "
        "device with `heartpi selftest`, and on a new kind of stethoscope "
        "re-set the threshold from 20 or more recordings of healthy people (`heartpi model calibrate`, or "
        "`--confirmed-normal` once clinicians enter their findings; the web page's Device page shows the device's "
        "own field sensitivity and specificity from those findings): on held-out "
        "sources this helped some a lot and others not at all (calibrated column), because it fixes a shifted "
        "operating point but not a lost ranking (low AUC).",
        "- A short clip (an upload of 1–4 s, as other stethoscopes and phone apps export) is judged on its few "
        "cycles, repeated to fill one 3 s window: it needs two beats beside 0.2 s at each end, or it is poor "
        "signal. The Yaseen figure above is such clips; a 20 s recording is still the reliable case. Such clips "
        "lose sensitivity, not specificity (Short recordings above), and so, less steeply, do recordings under 10 s "
        "(a recording stopped early; uploads), so a normal from under 10 s carries a caution on the recording page "
        "(lists mark it \"short recording\"), in `heartpi classify` and in the CSV and FHIR exports.",
        "- A quiet recording (the capture gain set so low that a chest's sound sits below about -45 dBFS RMS on a "
        "16-bit card) or a coarse one (an 8-bit export) refers more healthy people, probably because the "
        "rounding noise fills the quiet between heart sounds as a murmur would (Quiet and coarse recordings above). Set the gain as the "
        "technician's guide says; an abnormal from a recording below -45 dBFS carries a caution that asks for a louder "
        "recording (lists mark it \"quiet recording\"), and the Device page flags a gain set too low.",
        "- The box cannot tell when a stethoscope is unfamiliar: a recording's spectral shape says which "
        "stethoscopes differ from the training ones, not where the model fails (Telling an unfamiliar stethoscope "
        "above). The Device page's share of people referred, and clinicians' findings, are what show it.",
        "- A stethoscope or phone that cuts the band below about 150 Hz makes the box answer \"poor signal\" far more "
        "often and miss more abnormal hearts among the recordings it does classify (Recordings without the low band "
        "above). Prefer a chest piece that passes 20-150 Hz; a phone's own microphone often does not.",
        "- Children, very fast heart rates, and murmurs that are soft or diastolic are under-represented.",
        "- Recordings from the same person may sit in train and test (no patient ids), so the test split flatters.",
        "- Two thirds of the test split is training-e, whose normal and abnormal recordings also differ in the "
        "recording chain itself (a DC bias and the sample resolution tell them apart: its normal recordings "
        "were stored with about 8 bits of grain, its abnormal ones with 13): the model ranks that source almost perfectly when "
        "trained on it and near chance when not, so the test split flatters again. The leave-one-source-out "
        "figures are the ones to expect from a stethoscope never heard.",
        "- The model was never validated prospectively. It must not be used without clinical follow-up.",
        "",
    ]
    return "\n".join(lines)


def write_card(folder: Path, metadata: dict, bench: Optional[dict] = None,
               measured: Optional[dict[str, str]] = None) -> Path:
    """Render ``folder``'s MODEL_CARD.md from ``metadata`` and the ablation table kept beside it."""
    ablation_file = folder / "ablations.json"
    ablations = json.loads(ablation_file.read_text()) if ablation_file.exists() else None
    card = folder / "MODEL_CARD.md"
    card.write_text(render(metadata, bench, ablations, measured))
    return card


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--bench", type=Path, help="text file with tools/bench_model.py output")
    for name, tool in MEASURED.items():
        parser.add_argument(f"--{name}", type=Path, help=f"text file with {tool} output")
    args = parser.parse_args(argv)
    meta = json.loads((args.assets / "heartpi-cnn.json").read_text())
    bench = {"text": "```\n" + args.bench.read_text().strip() + "\n```"} if args.bench else None
    measured = {name: f"```\n{path.read_text().strip()}\n```" for name in MEASURED
                if (path := getattr(args, name)) is not None}
    print(write_card(args.assets, meta, bench, measured))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
