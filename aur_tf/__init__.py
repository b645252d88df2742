"""Unsupervised image source separation (Hoshen, ICASSP 2019) in TensorFlow."""
