"""Tests of the framework: bus, store, supervision."""
