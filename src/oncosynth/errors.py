"""Errors a user can cause and fix.

Anything raised as an ``OncosynthError`` is an *expected* failure: the CLI
prints its message (no traceback) and exits with status 2. Bugs stay ordinary
exceptions so they keep their traceback.
"""

from __future__ import annotations

from pathlib import Path


class OncosynthError(Exception):
    """Base class for expected, user-facing errors."""


class DataError(OncosynthError):
    """A problem with one input file or folder; the message names it."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(OncosynthError):
    """A configuration value that cannot work."""


class CheckpointError(OncosynthError):
    """A checkpoint that is missing, corrupt or of another kind."""


class WorkFailed(OncosynthError):
    """Some units of a parallel job failed after their retries; the others' results are kept."""
