"""Thin command-line entry points: argument parsing only; the work is done by the package API.

Every command reports a user error (bad file, bad value, bad flag) as one ``<prog>: error: ...`` message on stderr
with exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # CLI users need no cuInit/oneDNN notices


def fail(prog: str, message: str, code: int = 2):
    """Print ``<prog>: error: <message>`` to stderr and exit with ``code``."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (`fail`), like the errors of the commands themselves."""

    def error(self, message):
        fail(self.prog, message)


def run_cli(prog: str, job: Callable[[], object], fatal: tuple = ()) -> int:
    """Run ``job``; ValueError/OSError exit with code 2 and ``fatal`` exceptions with code 1, each as a `fail`
    message. Returns 0 on success."""
    try:
        job()
    except fatal as err:
        fail(prog, str(err), code=1)
    except (ValueError, OSError) as err:
        fail(prog, str(err) or type(err).__name__)
    except KeyboardInterrupt:
        fail(prog, "interrupted", code=130)
    return 0
