"""Run ``oncosynth ARGS`` through its entry-point function ``main()`` inside the test process.

Below the interpreter's start-up this is the console script's own path: ``main()`` prints an
``OncosynthError`` as one line on stderr and exits with status 2. An exception ``main()`` does not
catch is not swallowed either: it propagates and fails the test, as the traceback of a real process
would. A real process costs seconds of imports per call, so tests/test_cli_exit_codes.py starts one
per command through the installed console script, and the other CLI tests use this.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout


def run_main(*args: str) -> subprocess.CompletedProcess:
    """``oncosynth *args`` in-process: its exit status, stdout and stderr, as ``subprocess.run`` gives them."""
    from oncosynth.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_tqdm = sys.argv, os.environ.get("TQDM_MININTERVAL")
    sys.argv = ["oncosynth", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:  # typer always exits; main() exits 2 on an OncosynthError
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        if saved_tqdm is None:  # main() sets it for a log-file stderr; leave the process as it was
            os.environ.pop("TQDM_MININTERVAL", None)
        else:
            os.environ["TQDM_MININTERVAL"] = saved_tqdm
    return subprocess.CompletedProcess(["oncosynth", *args], code, out.getvalue(), err.getvalue())
