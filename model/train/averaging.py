"""Weight averaging along the training run (SWA, Izmailov et al. 2018; SWAD, Cha et al. 2021).

Why: one training run stops at the epoch whose validation AUC happened to peak, and that
point is a lottery on a stethoscope the model never heard (three initialisation seeds of one
recipe gave an unseen device AUC 0.62, 0.90 and 0.91). Averaging the weights of many points
along the run lands in a flatter region of the loss, which domain-generalisation studies
found moves less under a shift of the input (SWAD: consistent gains on unseen domains), and
it removes the choice of one lucky epoch. The shipped network keeps its shape and size.

Averaged weights leave the batch-normalisation statistics stale (they belong to no single
point), so they are measured again, layer by layer, on training windows.
"""

from __future__ import annotations

import math

import numpy as np

#: averaging starts after this fraction of the epochs (the first epochs are far from any
#: minimum: validation AUC 0.79-0.84 where later epochs reach 0.86-0.89)
AVERAGE_AFTER = 0.3


def first_averaged_epoch(epochs: int) -> int:
    """The 0-based epoch whose end weights are the first averaged: 6 of 20 (the 7th), 3 of 10."""
    return min(epochs - 1, math.ceil(AVERAGE_AFTER * epochs))


def weight_average_callback(model, first_epoch: int):
    """A Keras callback keeping the running mean of ``model``'s trainable weights at the end of
    every epoch from ``first_epoch`` (0-based) on; ``callback.average()`` gives the means, in
    ``model.trainable_weights`` order, and ``callback.count`` how many epochs they hold."""
    import tensorflow as tf

    class WeightAverage(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.count = 0
            self._sums: list[np.ndarray] = []

        def on_epoch_end(self, epoch, logs=None):
            if epoch < first_epoch:
                return
            values = [w.numpy().astype(np.float64) for w in model.trainable_weights]
            self._sums = values if not self._sums else [s + v for s, v in zip(self._sums, values)]
            self.count += 1

        def average(self) -> list[np.ndarray]:
            if not self.count:
                raise ValueError("no epoch was averaged: training stopped before the first averaged epoch")
            return [(s / self.count).astype(np.float32) for s in self._sums]

    return WeightAverage()


def set_trainable_weights(model, values: list[np.ndarray]) -> None:
    for variable, value in zip(model.trainable_weights, values, strict=True):
        variable.assign(value)


def remeasure_batch_norm(model, windows: np.ndarray, *, at_most: int = 8192, batch_size: int = 512) -> None:
    """Set every BatchNormalization layer's moving mean and variance to the statistics of its
    input over ``windows`` (an evenly spaced, so reproducible, subset of at most ``at_most``),
    in network order: each layer is measured with the layers before it already corrected, as
    the network will run. Exact statistics, not a momentum estimate, so no warm-up passes."""
    import tensorflow as tf

    if len(windows) > at_most:
        windows = windows[np.linspace(0, len(windows) - 1, at_most).astype(int)]
    for layer in model.layers:
        if not isinstance(layer, tf.keras.layers.BatchNormalization):
            continue
        probe = tf.keras.Model(model.input, layer.input)
        total, total_sq, n = 0.0, 0.0, 0
        for start in range(0, len(windows), batch_size):
            values = probe(windows[start:start + batch_size], training=False).numpy().astype(np.float64)
            values = values.reshape(-1, values.shape[-1])
            total, total_sq, n = total + values.sum(0), total_sq + (values ** 2).sum(0), n + len(values)
        mean = total / n
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_sq / n - mean ** 2, 0.0).astype(np.float32))
