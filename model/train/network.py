"""The CNN: the research prototype's four convolution layers, sized for int8 on a Pi.

The prototype used 2-D convolutions over the MFCC "image". Measured on 2 CPU cores, the same
depth as 1-D convolutions over time (the MFCCs as channels) trains ~8x faster (2.7 s vs
21 s per 8192 windows) and matches how heart sounds vary: along time, not across cepstral
coefficients. The input keeps the ``(n_mfcc, frames, 1)`` layout the runtime feeds.
"""

from __future__ import annotations


def mix_style_layer(p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6, seed: int = 0):
    """MixStyle (Zhou et al., ICLR 2021), a training-only augmentation of recording "style".

    A convolution's per-channel mean and standard deviation over time carry much of what
    the microphone and chest piece did to the sound. With probability ``p`` per batch, each
    window's channels are re-normalised to a Beta(alpha, alpha) mix of its own statistics
    and those of another window of the batch (the batch mixes sources), so the layers after
    it cannot lean on one stethoscope's style. Outside training it is the identity: the
    converted model contains none of it.
    """
    import keras
    from keras import ops

    class MixStyle(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seeds = keras.random.SeedGenerator(seed)

        def call(self, x, training=False):
            if not training:
                return x
            mean = ops.stop_gradient(ops.mean(x, axis=1, keepdims=True))
            std = ops.stop_gradient(ops.sqrt(ops.var(x, axis=1, keepdims=True) + eps))
            batch = ops.shape(x)[0]
            # Beta(alpha, alpha) from two gammas; keras.random has no beta sampler
            a = keras.random.gamma((batch, 1, 1), alpha, seed=self.seeds)
            b = keras.random.gamma((batch, 1, 1), alpha, seed=self.seeds)
            mix = a / (a + b + 1e-12)
            other = keras.random.shuffle(ops.arange(batch), seed=self.seeds)
            mixed_mean = mix * mean + (1 - mix) * ops.take(mean, other, axis=0)
            mixed_std = mix * std + (1 - mix) * ops.take(std, other, axis=0)
            styled = (x - mean) / std * mixed_std + mixed_mean
            apply = keras.random.uniform((), seed=self.seeds) < p
            return ops.where(apply, styled, x)

    return MixStyle


def gradient_reversal_layer(strength):
    """Identity forwards; backwards it multiplies the gradient by ``-strength`` (a scalar
    ``tf.Variable``, so training can ramp it up). Ganin et al., JMLR 2016."""
    import keras
    import tensorflow as tf

    @tf.custom_gradient
    def reverse(x):
        return tf.identity(x), lambda dy: -strength * dy

    class GradientReversal(keras.layers.Layer):
        def call(self, x):
            return reverse(x)

    return GradientReversal


def build_model(n_mfcc: int, frames: int, *, filters=(32, 32, 48, 48), kernel: int = 5,
                dropout: float = 0.3, mix_style: bool = False, n_sources: int = 0,
                adversary_strength=None, blur_pool: bool = False, export_form: bool = False):
    """4 x (Conv1D -> BatchNorm -> ReLU [-> MaxPool]) -> global average -> sigmoid.

    Global average pooling keeps the parameter count (~27k) and the int8 file (~50 KB)
    small, and makes the score an average of evidence over time. ``mix_style``: a
    :func:`mix_style_layer` after the first two blocks (training only). ``n_sources``: a
    domain-adversarial head (Ganin et al. 2016) that learns to tell the ``n_sources``
    source sets apart from the pooled features through a :func:`gradient_reversal_layer`
    (``adversary_strength``), so the network is pushed towards features that do not say
    which stethoscope recorded the window; the model then has two outputs, ``p_abnormal``
    and ``source``. Both are training-only: :func:`plain_network` gives the shipped network.

    ``blur_pool``: anti-aliased pooling (Zhang, ICML 2019), part of the shipped network. A
    stride-2 max-pool keeps every other step, so a sound moved by one analysis frame lands
    on another of 2**3 = 8 sampling grids and the score moves with it (tools/eval_start_jitter.py).
    Max-pooling densely (stride 1) and then low-passing with a [1, 2, 1] / 4 filter before
    keeping every other step makes the kept steps nearly the same whichever grid the sound
    met. Trained as two 2-wide average pools (stride 1, then 2); ``export_form`` builds the
    same function as a fixed depthwise convolution, see :func:`inference_network`.
    """
    import tensorflow as tf

    # Every layer named: Keras numbers unnamed layers per process, and the names go into the
    # .tflite, so a run that built LOSO folds first would ship different bytes (another sha256).
    layers = tf.keras.layers
    inputs, x = mfcc_input(n_mfcc, frames)
    for i, (width, pool) in enumerate(zip(filters, POOLS), start=1):
        x = conv_block(x, i, width, pool, kernel=kernel, blur_pool=blur_pool, export_form=export_form)
        if mix_style and i <= 2:
            x = mix_style_layer(seed=i)(name=f"mix_style{i}")(x)
    x = layers.GlobalAveragePooling1D(name="average")(x)
    pooled = x
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_abnormal")(x)
    if n_sources:
        y = gradient_reversal_layer(adversary_strength)(name="reverse_gradient")(pooled)
        y = layers.Dense(32, activation="relu", name="source_hidden")(y)
        source = layers.Dense(n_sources, activation="softmax", name="source")(y)
        return tf.keras.Model(inputs, {"p_abnormal": outputs, "source": source}, name="heartpi_cnn")
    return tf.keras.Model(inputs, outputs, name="heartpi_cnn")


def mfcc_input(n_mfcc: int, frames: int):
    """(input, time-major view): the runtime's ``(n_mfcc, frames, 1)`` window as ``(frames, n_mfcc)``,
    time steps x channels, for the 1-D convolutions. Every network form starts here, with these
    layer names (they go into the .tflite)."""
    import tensorflow as tf

    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=(n_mfcc, frames, 1), name="mfcc")
    x = layers.Reshape((n_mfcc, frames), name="drop_channel")(inputs)
    return inputs, layers.Permute((2, 1), name="time_major")(x)


POOLS = (2, 2, 2, None)  #: each convolution block's pooling step (the last block is pooled globally)


def conv_block(x, i: int, width: int, pool, *, kernel: int, blur_pool: bool, export_form: bool = False,
               prefix: str = "", groups: int = 1):
    """Block ``i``: Conv1D -> BatchNorm -> ReLU [-> pooling], its layers named ``prefix`` + kind + ``i``
    (``groups``: a grouped convolution, see :mod:`model.train.ensemble`)."""
    import tensorflow as tf

    layers = tf.keras.layers
    x = layers.Conv1D(width, kernel, padding="same", use_bias=False, groups=groups, name=f"{prefix}conv{i}")(x)
    x = layers.BatchNormalization(name=f"{prefix}norm{i}")(x)
    x = layers.ReLU(name=f"{prefix}relu{i}")(x)
    if pool and blur_pool:
        x = layers.MaxPooling1D(pool, strides=1, padding="same", name=f"{prefix}pool{i}")(x)
        if export_form:
            return _depthwise_blur(x, i)
        x = layers.AveragePooling1D(2, strides=1, padding="same", name=f"{prefix}blur{i}")(x)
        return layers.AveragePooling1D(2, strides=pool, name=f"{prefix}subsample{i}")(x)
    if pool:
        return layers.MaxPooling1D(pool, name=f"{prefix}pool{i}")(x)
    return x


def _depthwise_blur(x, i: int):
    """The trained blur (2-wide average, stride 1, "same"; then 2-wide average, stride 2) as one
    fixed depthwise [1, 2, 1] / 4 convolution, stride 2, over the steps with the last one
    repeated: the same numbers at every step and length, odd or even (the "same" average of
    the last step is that step alone, which the repeat reproduces). XNNPACK, the runtime's
    fast path, runs int8 depthwise convolutions but not int8 average pools: the shipped file
    scores 12 windows in 0.33 ms, against 1.32 ms converted as trained (plain max-pooling 0.31)."""
    import numpy as np
    import tensorflow as tf

    layers = tf.keras.layers
    steps, channels = x.shape[1], x.shape[2]
    last = layers.Cropping1D((steps - 1, 0), name=f"last_step{i}")(x)
    x = layers.Concatenate(axis=1, name=f"repeat_last{i}")([x, last])
    blur = layers.DepthwiseConv1D(3, strides=2, padding="valid", use_bias=False, trainable=False,
                                  name=f"blur{i}")
    x = blur(x)
    blur.set_weights([np.tile(np.array([0.25, 0.5, 0.25], np.float32)[:, None, None], (1, channels, 1))])
    return x


def inference_network(model):
    """The network the int8 file is converted from: ``model`` itself, or, if its pooling is
    anti-aliased, the same weights in :func:`_depthwise_blur`'s export form (the same scores);
    an ensemble as one network of grouped convolutions (:func:`model.train.ensemble.grouped_network`)."""
    from model.train.ensemble import grouped_network, members_of

    if members_of(model):
        return grouped_network(model)
    if not any(layer.name.startswith("subsample") for layer in model.layers):
        return model
    exported = _same_shape(model, blur_pool=True, export_form=True)
    trained = {layer.name for layer in model.layers}
    for layer in exported.layers:
        if layer.name in trained and not layer.name.startswith("blur"):
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return exported


def _same_shape(model, **options):
    """A fresh :func:`build_model` network shaped like ``model`` (input, widths, kernel, dropout)."""
    inputs = model.input
    return build_model(inputs.shape[1], inputs.shape[2], filters=tuple(
        model.get_layer(f"conv{i}").filters for i in range(1, 5)),
        kernel=model.get_layer("conv1").kernel_size[0], dropout=model.get_layer("dropout").rate, **options)


TRAINING_ONLY = ("mix_style", "reverse_gradient", "source_hidden", "source")


def plain_network(model):
    """The trained network without its training-only parts (MixStyle, the source adversary, an
    ensemble's per-member outputs, which become their mean logit):
    the same weights layer by layer, so the saved float model and the int8 file are exactly
    the plain network."""
    from model.train.ensemble import averaged_network, is_training_form

    if is_training_form(model):
        return averaged_network(model)
    if not any(layer.name.startswith(TRAINING_ONLY) for layer in model.layers):
        return model
    plain = _same_shape(model, blur_pool=any(layer.name.startswith("blur") for layer in model.layers))
    for layer in plain.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return plain
