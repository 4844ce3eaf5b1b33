"""The ``oncosynth`` command line: every command is a thin call into the library.

One module per command group; importing this package registers them all on ``app`` (in the
order ``--help`` lists them). ``main`` is the console-script entry point.
"""

from oncosynth.cli import data, demo, generators, evaluate, quality, study, pretrain  # noqa: F401  (registers the commands)
from oncosynth.cli.app import app, executor_options, main

__all__ = ["app", "executor_options", "main"]
