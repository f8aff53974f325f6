"""Tests of the systemd unit templates."""
