"""Every command's expected errors exit with status 2 and one line, through the installed entry point.

Each case runs ``oncosynth`` as its own process, started from the console-script entry point that
pyproject.toml declares (not typer's test runner, which catches exceptions in-process and would hide a
traceback or a wrong exit status). The processes run concurrently: most of their time is importing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# the `oncosynth` console script, resolved the way the installed launcher resolves it
ENTRY_POINT = ("import sys; from importlib.metadata import entry_points; "
               "(ep,) = entry_points(group='console_scripts', name='oncosynth'); "
               "sys.argv[0] = 'oncosynth'; sys.exit(ep.load()())")


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, text the one error line must contain): one case per command, since each process
    costs seconds of imports; the library raises the other errors, tested where it is."""
    (tmp / "a-file").write_text("not a folder")
    (tmp / "bad.yaml").write_text("data: {}\n")
    return {
        "data summary: missing path": (["data", "summary", str(tmp / "nothere")], "no such file or folder"),
        "data phantom: bad difficulty": (["data", "phantom", str(tmp / "p"), "--difficulty", "nightmare"],
                                         "unknown phantom difficulty"),
        "demo: output is a file": (["demo", "--out", str(tmp / "a-file")], "a-file"),
        "train-generator: unknown method": (["train-generator", "--method", "nope", "--data", str(tmp),
                                             "--out", str(tmp / "o")], "unknown generator 'nope'"),
        "generate: no checkpoint": (["generate", str(tmp / "nothere"), "--n", "2", "--class", "benign",
                                     "--out", str(tmp / "o")], "no generator checkpoint"),
        "evaluate: option not for --sifid": (["evaluate", "--sifid", "--real", str(tmp), "--synthetic", str(tmp),
                                              "--out", str(tmp / "o"), "--no-frd"], "--no-frd"),
        "fit-anomaly: missing data": (["fit-anomaly", "--data", str(tmp / "nothere"), "--out", str(tmp / "o")],
                                      "no such file or folder"),
        "style-transfer: bad number list": (["style-transfer", "--data", str(tmp), "--out", str(tmp / "o"),
                                             "--steps", "x"], "--steps"),
        "study: invalid config": (["study", str(tmp / "bad.yaml"), "--out", str(tmp / "o")], "Field required"),
        "usage: missing option": (["train-generator", "--method", "cdcgan"], "Missing option"),
    }


def test_expected_errors_exit_2_with_one_line_and_no_traceback(tmp_path):
    cases = _cases(tmp_path)
    running = {name: subprocess.Popen([sys.executable, "-c", ENTRY_POINT, *args], cwd=tmp_path, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, (args, _) in cases.items()}
    failures = []
    for name, process in running.items():
        _, stderr = process.communicate(timeout=300)
        expected = cases[name][1]
        if process.returncode != 2 or "Traceback" in stderr or expected not in stderr:
            failures.append(f"{name}: exit {process.returncode}, stderr: {stderr.strip()[-400:]}")
    assert not failures, "\n".join(failures)


def test_help_exits_0():
    result = subprocess.run([sys.executable, "-c", ENTRY_POINT, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Usage" in result.stdout
