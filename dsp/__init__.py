"""HeartPi signal processing: read a recording, judge its quality, compute MFCC features.

numpy only (scipy.fft just for long transforms, imported when used; PyAV only when a compressed
recording arrives, :mod:`dsp.decode`). No hardware, no TensorFlow, no librosa: importing this
package must stay cheap on a Raspberry Pi.
"""

from .decode import Audio, read_audio
from .interruptions import ScoredWindows, dropout_frames, left_out_stretches, noise_burst_frames, scored_windows
from .errors import BadAudioError, DSPError, ParameterError
from .gate import Judgement, judge
from .features import (FeatureParams, mel_filterbank, melspectrogram, mfcc, power_spectrogram,
                       power_to_db, recording_features, window_features)
from .filters import (ANALYSIS_RATE_HZ, HEART_BAND_HZ, bandpass, bandpass_with_spectrum, resample,
                      to_analysis_rate)
from .listening import LISTEN_RATE_HZ, LISTENING_MODES, ListeningMode, listening_copy
from .signal_quality import REASON_ADVICE, QualityReport, heard_quality, heart_rate, quality
from .wav import (MAX_CHANNELS, MAX_DURATION_S, MAX_FILE_BYTES, MAX_RATE_HZ, MIN_DURATION_S,
                  MIN_RATE_HZ, CompressedWavError, read_wav, wav_bytes, write_wav)

__all__ = [
    "ANALYSIS_RATE_HZ", "Audio", "Judgement", "judge", "BadAudioError", "CompressedWavError", "DSPError", "FeatureParams", "HEART_BAND_HZ",
    "LISTENING_MODES", "LISTEN_RATE_HZ", "ListeningMode", "MAX_CHANNELS", "MAX_DURATION_S",
    "MAX_FILE_BYTES", "MAX_RATE_HZ", "MIN_DURATION_S",
    "MIN_RATE_HZ", "ParameterError", "QualityReport", "REASON_ADVICE", "bandpass",
    "bandpass_with_spectrum", "heard_quality", "heart_rate", "listening_copy", "mel_filterbank", "melspectrogram", "mfcc",
    "power_spectrogram", "power_to_db", "quality", "read_audio", "read_wav", "recording_features", "resample",
    "ScoredWindows", "dropout_frames", "left_out_stretches", "noise_burst_frames", "scored_windows",
    "to_analysis_rate", "wav_bytes", "window_features", "write_wav",
]
