"""Inference: preprocess -> engine -> decode -> track/smooth, one frame at a time."""
