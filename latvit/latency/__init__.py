"""Latency: the measurement protocol, the bench, latency lookup tables and the predictor."""
