"""Milo's test suite: real brokers, real programs."""
