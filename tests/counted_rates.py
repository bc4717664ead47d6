"""Heart rates counted by hand (S1 onsets on band-passed plots of the first 10 s).

training-b/b0002: S1 at 1.50 ... 7.45 s, 8 beats, 7 intervals -> 0.850 s -> 70.6 bpm
training-f/f0004: S1 at 0.05 ... 9.20 s, 11 beats, 10 intervals -> 0.915 s -> 65.6 bpm
training-e/e00001: S1 at 2.85 ... 9.20 s, 9 beats, 8 intervals -> 0.794 s -> 75.6 bpm
training-d/d0001: S1 at 0.28 ... 5.88 s, 6 beats, 5 intervals -> 1.120 s -> 53.6 bpm
"""

COUNTED_BPM = {
    "training-b/b0002.flac": 70.6,
    "training-f/f0004.flac": 65.6,
    "training-e/e00001.flac": 75.6,
    "training-d/d0001.flac": 53.6,
}
