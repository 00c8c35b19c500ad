"""Simulated acquisitions: the point-spread functions and the degradation of an image."""
