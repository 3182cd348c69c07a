"""Thin command-line entry points: argument parsing only; the work is done by the package API."""
from __future__ import annotations

import os
import sys
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # CLI users need no cuInit/oneDNN notices


def run_cli(job: Callable[[], object]) -> int:
    """Run ``job``; a user error (bad file, bad value) becomes one line on stderr and exit code 2, not a traceback."""
    try:
        job()
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
