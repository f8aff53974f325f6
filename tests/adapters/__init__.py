"""Tests of the adapters to outside programs."""
