"""Tests of `milo install`, `uninstall` and `doctor` on rendered trees and a running node."""
