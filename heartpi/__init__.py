"""HeartPi: an offline heart-sound screening aid. Not a diagnostic device.

This package is the composition root: the ``heartpi`` command line, which is the only place
that wires ``dsp``, ``model``, ``device`` and ``webui`` together.
"""

__version__ = "0.1.0"
