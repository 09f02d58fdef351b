"""Offline training and evaluation; serving code never imports this package."""

import os

# TensorFlow's C++ logging would bury the training log in graph-optimiser notices; set before TF loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
