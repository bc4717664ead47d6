"""HeartPi model runtime: int8 TFLite CNN over MFCC windows -> Verdict.

Imports :mod:`dsp` only; TensorFlow lives in :mod:`model.train` and never on a device.
"""

from .classifier import DEFAULT_MODEL, Classifier, software_version
from .errors import ModelError, ModelFileError, RuntimeMissingError
from .verdict import ABNORMAL, DISCLAIMER, LABEL_TEXT, NORMAL, POOR_SIGNAL, Verdict

__all__ = ["ABNORMAL", "Classifier", "DEFAULT_MODEL", "DISCLAIMER", "LABEL_TEXT", "ModelError",
           "ModelFileError", "NORMAL", "POOR_SIGNAL", "RuntimeMissingError", "Verdict",
           "software_version"]
