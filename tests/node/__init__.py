"""Tests of the node package: supervision and persistence."""
