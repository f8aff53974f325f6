"""The documentation: every one-liner it shows is run against a real node."""
