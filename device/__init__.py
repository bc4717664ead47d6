"""HeartPi device: configuration, capture, GPIO, the daemon and the records store.

Imports :mod:`dsp` and :mod:`model` only when needed; nothing here touches hardware at import.
"""

from .config import Config, load_config
from .errors import ConfigError, DeviceError, SoundCardError, StorageError

__all__ = ["Config", "ConfigError", "DeviceError", "SoundCardError", "StorageError", "load_config"]
