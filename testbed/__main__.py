"""`python -m testbed ...` entry point."""

from testbed.cli import main

raise SystemExit(main())
