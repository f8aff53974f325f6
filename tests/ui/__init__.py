"""Tests of the web UI: the real page in headless Chromium against a real node."""
