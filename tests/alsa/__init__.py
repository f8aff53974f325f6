"""Tests of the rendered asound.conf, against golden files and against the real alsa-lib."""
