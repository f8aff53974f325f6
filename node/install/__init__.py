"""`milo install`, `uninstall`, `doctor`, `fetch-binaries`: a Pi set up in one command, and undone."""
