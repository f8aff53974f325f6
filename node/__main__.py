"""`python -m node` runs the command-line interface."""

from node.cli import main

raise SystemExit(main())
