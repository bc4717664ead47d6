"""The CNN: the research prototype's four convolution layers, sized for int8 on a Pi.

The prototype used 2-D convolutions over the MFCC "image". Measured on 2 CPU cores, the same
depth as 1-D convolutions over time (the MFCCs as channels) trains ~8x faster (2.7 s vs
21 s per 8192 windows) and matches how heart sounds vary: along time, not across cepstral
coefficients. The input keeps the ``(n_mfcc, frames, 1)`` layout the runtime feeds.
"""

from __future__ import annotations


def build_model(n_mfcc: int, frames: int, *, filters=(32, 32, 48, 48), kernel: int = 5,
                dropout: float = 0.3):
    """4 x (Conv1D -> BatchNorm -> ReLU [-> MaxPool]) -> global average -> sigmoid.

    Global average pooling keeps the parameter count (~27k) and the int8 file (~35 KB)
    small, and makes the score an average of evidence over time.
    """
    import tensorflow as tf

    # Every layer named: Keras numbers unnamed layers per process, and the names go into the
    # .tflite, so a run that built LOSO folds first would ship different bytes (another sha256).
    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=(n_mfcc, frames, 1), name="mfcc")
    x = layers.Reshape((n_mfcc, frames), name="drop_channel")(inputs)
    x = layers.Permute((2, 1), name="time_major")(x)  # (frames, n_mfcc): time steps x channels
    pools = (2, 2, 2, None)
    for i, (width, pool) in enumerate(zip(filters, pools), start=1):
        x = layers.Conv1D(width, kernel, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"norm{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if pool:
            x = layers.MaxPooling1D(pool, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling1D(name="average")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_abnormal")(x)
    return tf.keras.Model(inputs, outputs, name="heartpi_cnn")
