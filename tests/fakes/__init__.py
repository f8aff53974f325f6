"""Test-only subsystems that implement the real Subsystem interface (Mopidy's dummy-backend habit)."""
