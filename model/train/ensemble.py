"""Several narrow networks in one int8 file, their logits averaged (a deep ensemble,
Lakshminarayanan et al. 2017).

Why: on a stethoscope it never heard, one trained network is a lottery. Three initialisation
seeds of one recipe scored an unseen device's recordings at AUC 0.66, 0.89 and 0.91, and
validation did not say which draw was which; the average of the three scored 0.86. Three
full networks would not fit the 64 KB budget, so each member is narrower (widths divided by
sqrt(members): about the same weights and arithmetic as one full network in all).

Three forms of the same function:

* training (:func:`build_ensemble`): each member its own branch, dropout and logit; the output
  holds every member's P(abnormal), so each member learns from its own loss, as if trained
  alone but on the same batches (Adam's steps do not depend on the loss's scale).
* plain (:func:`averaged_network`): the branches with one head, sigmoid of the members' mean
  logit. The saved float model: fast in Keras.
* export (:func:`grouped_network`): one grouped convolution per block instead of a branch per
  member, so the .tflite holds one graph, not three (75 KB as branches, 57 KB grouped).
"""

from __future__ import annotations

import math

import numpy as np

from model.train.network import POOLS, conv_block, mfcc_input


def member_filters(filters: tuple[int, ...], members: int) -> tuple[int, ...]:
    """Each member's widths: the full network's divided by sqrt(members), rounded up."""
    return tuple(math.ceil(width / math.sqrt(members)) for width in filters)


def _prefix(member: int) -> str:
    return f"m{member}_"


def members_of(model) -> int:
    """How many members ``model`` averages (0: not an ensemble)."""
    names = {layer.name for layer in model.layers}
    return sum(1 for member in range(64) if f"{_prefix(member)}conv1" in names)


def is_training_form(model) -> bool:
    """Whether ``model`` is :func:`build_ensemble`'s training form (every member's own output)."""
    return any(layer.name == "p_members" for layer in model.layers)


def build_ensemble(n_mfcc: int, frames: int, *, members: int, filters=(32, 32, 48, 48), kernel: int = 5,
                   dropout: float = 0.3, blur_pool: bool = True):
    """The training form: output ``p_members``, shape (batch, members)."""
    import tensorflow as tf

    layers = tf.keras.layers
    inputs, shared = mfcc_input(n_mfcc, frames)
    logits = []
    for member in range(members):
        prefix = _prefix(member)
        x = shared
        for i, (width, pool) in enumerate(zip(member_filters(filters, members), POOLS), start=1):
            x = conv_block(x, i, width, pool, kernel=kernel, blur_pool=blur_pool, prefix=prefix)
        x = layers.GlobalAveragePooling1D(name=f"{prefix}average")(x)
        x = layers.Dropout(dropout, name=f"{prefix}dropout")(x)
        logits.append(layers.Dense(1, name=f"{prefix}logit")(x))
    x = layers.Concatenate(name="member_logits")(logits)
    outputs = layers.Activation("sigmoid", name="p_members")(x)
    return tf.keras.Model(inputs, outputs, name="heartpi_ensemble")


def _head_weights(model, members: int) -> list[np.ndarray]:
    """One Dense head equal to the mean of the members' logits."""
    kernels = [model.get_layer(f"{_prefix(m)}logit").get_weights() for m in range(members)]
    return [np.concatenate([k for k, _ in kernels]) / members, np.mean([b for _, b in kernels], axis=0)]


def averaged_network(model):
    """The plain form of a trained :func:`build_ensemble` network (shares its layers)."""
    import tensorflow as tf

    members = members_of(model)
    pooled = [model.get_layer(f"{_prefix(m)}average").output for m in range(members)]
    head = tf.keras.layers.Dense(1, activation="sigmoid", name="p_abnormal")
    outputs = head(tf.keras.layers.Concatenate(name="members")(pooled))
    head.set_weights(_head_weights(model, members))
    return tf.keras.Model(model.input, outputs, name="heartpi_ensemble")


def grouped_network(model):
    """The export form of an ensemble (training or plain form): one grouped convolution per
    block, the members' kernels side by side, the low-pass as :mod:`network`'s fixed
    depthwise convolution. Member ``m`` owns channels ``[m * w, (m + 1) * w)`` of every block."""
    import tensorflow as tf

    layers = tf.keras.layers
    members = members_of(model)
    first = model.get_layer(f"{_prefix(0)}conv1")
    blur_pool = any(layer.name.endswith("subsample1") for layer in model.layers)
    inputs, x = mfcc_input(model.input.shape[1], model.input.shape[2])
    for i, pool in enumerate(POOLS, start=1):
        width = model.get_layer(f"{_prefix(0)}conv{i}").filters
        x = conv_block(x, i, members * width, pool, kernel=first.kernel_size[0], blur_pool=blur_pool,
                       export_form=True, groups=1 if i == 1 else members)
    x = layers.GlobalAveragePooling1D(name="average")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_abnormal")(x)
    exported = tf.keras.Model(inputs, outputs, name="heartpi_ensemble")
    for i in range(1, len(POOLS) + 1):
        convs = [model.get_layer(f"{_prefix(m)}conv{i}").get_weights()[0] for m in range(members)]
        exported.get_layer(f"conv{i}").set_weights([np.concatenate(convs, axis=-1)])
        norms = [model.get_layer(f"{_prefix(m)}norm{i}").get_weights() for m in range(members)]
        exported.get_layer(f"norm{i}").set_weights([np.concatenate(part) for part in zip(*norms)])
    if is_training_form(model):
        head = _head_weights(model, members)
    else:
        head = model.get_layer("p_abnormal").get_weights()
    exported.get_layer("p_abnormal").set_weights(head)
    return exported
