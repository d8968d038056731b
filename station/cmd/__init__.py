"""Subcommands of the ``station`` CLI, one module each (see station/cli.py)."""
