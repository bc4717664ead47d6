"""Training the HeartPi CNN (TensorFlow; the optional ``[train]`` extra, never on a device).

``python -m model.train --help`` reproduces the shipped model end to end.
"""
