"""Tests of each source against the real programs or fakes that speak their protocol."""
