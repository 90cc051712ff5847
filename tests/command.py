"""The command's `main` run in the test's own process, for the many error cases: a fresh
interpreter for each would cost seconds of imports apiece. Tests of the real command line
(`python -m meshcap.cli ...`) still run it as a subprocess."""
from __future__ import annotations

import contextlib
import io
import subprocess


def run_main(*args: str) -> subprocess.CompletedProcess:
    """`meshcap ARGS` in this process: the exit code and stderr as `subprocess.run` gives them."""
    from meshcap.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
    return subprocess.CompletedProcess(["meshcap", *args], code, out.getvalue(), err.getvalue())
