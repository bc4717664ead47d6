"""glibc heap settings for a process that analyses recordings.

Classifying a 20 s recording allocates and frees a few dozen arrays of 0.1-4 MB. By default
glibc serves blocks above its mmap threshold (128 KB at start, raised only as far as the
largest block freed so far) with fresh ``mmap`` calls, and trims the top of the heap back to
the system; either way every classify faults its temporaries in again. Measured by
``tools/bench_model.py`` in a fresh process that classifies only 2 kHz recordings (as the CLI
and the web page's uploads do): ~430 minor page faults per classify and a best time of
3.8-4.8 ms, against none and 3.0-3.5 ms with the settings below (before the quality check
stopped taking its own Welch transform: ~840 faults, 5.5-6.5 ms against 3.0-4.0 ms).
Fixed thresholds keep those pages in the heap between uses. The daemon still hands freed
heap back after each recording with :func:`release_freed_heap`, so its idle size is unchanged.

Both are no-ops where the C library is not glibc. Nothing is loaded at import time.
"""

from __future__ import annotations

import ctypes
import logging
from functools import lru_cache
from typing import Optional

log = logging.getLogger(__name__)

# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Blocks up to this size come from the heap (a 20 s float32 recording at 48 kHz is 3.8 MB);
# larger ones (a long 48 kHz upload) still get their own mapping and go back when freed.
MMAP_THRESHOLD_BYTES = 4 << 20
# Free heap kept at the top between analyses, at most (one 48 kHz analysis' working set).
TRIM_THRESHOLD_BYTES = 16 << 20


@lru_cache(maxsize=1)
def _glibc() -> Optional[ctypes.CDLL]:
    """The C library when it is glibc (has ``mallopt`` and ``malloc_trim``), else None; loaded once."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc has them, musl and others may not
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def reuse_freed_heap(mmap_threshold: int = MMAP_THRESHOLD_BYTES,
                     trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Keep analysis-sized blocks in the heap for reuse; True when glibc took the settings.

    Called once at the start of each HeartPi process (``heartpi`` CLI, daemon, web page).
    """
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    if not ok:
        log.debug("glibc refused the heap thresholds %d / %d", mmap_threshold, trim_threshold)
    return ok


def release_freed_heap() -> None:
    """Give the heap that an analysis freed back to the system (glibc's ``malloc_trim``).

    A 48 kHz recording needs tens of megabytes of temporary arrays; without this the idle
    daemon would stay ~12 MB larger after its first recording.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
