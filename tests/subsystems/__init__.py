"""Tests of each subsystem against the real programs."""
