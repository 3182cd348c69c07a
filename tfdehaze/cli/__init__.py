"""Thin command-line entry points: argument parsing only; the work is done by the package API.

Every command reports a user error (bad file, bad value, bad flag) as one ``<prog>: error: ...`` message on stderr
with exit code 2, never a traceback: parse with `Parser`, run with `run_cli`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import NoReturn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # CLI users need no cuInit/oneDNN notices


def _fail(prog: str, message: str, code: int = 2) -> NoReturn:
    """Print ``<prog>: error: <message>`` to stderr and exit with ``code``."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit code 2, like the errors of the commands themselves.

    Examples:
        >>> import contextlib, io
        >>> from tfdehaze.cli import Parser
        >>> parser = Parser(prog="demo")
        >>> _ = parser.add_argument("--radius", type=int, default=60)
        >>> parser.parse_args(["--radius", "4"]).radius
        4
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     try:
        ...         parser.parse_args(["--radius", "four"])
        ...     except SystemExit as stop:
        ...         print("exit code", stop.code)
        exit code 2
        >>> err.getvalue()
        "demo: error: argument --radius: invalid int value: 'four'\\n"
    """

    def error(self, message: str) -> NoReturn:
        _fail(self.prog, message)


def run_cli(prog: str, job: Callable[[], object], fatal: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``job``; ValueError/OSError exit with code 2 and ``fatal`` exceptions with code 1, each as one
    ``<prog>: error: <message>`` line on stderr (KeyboardInterrupt: code 130). Returns 0 on success.

    Examples:
        >>> import contextlib, io
        >>> from tfdehaze.cli import run_cli
        >>> run_cli("demo", lambda: None)
        0
        >>> def job():
        ...     raise FileNotFoundError("no such image: hazy.png")
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     try:
        ...         run_cli("demo", job)
        ...     except SystemExit as stop:
        ...         print("exit code", stop.code)
        exit code 2
        >>> err.getvalue()
        'demo: error: no such image: hazy.png\\n'
    """
    try:
        job()
    except fatal as err:
        _fail(prog, str(err), code=1)
    except (ValueError, OSError) as err:
        _fail(prog, str(err) or type(err).__name__)
    except KeyboardInterrupt:
        _fail(prog, "interrupted", code=130)
    return 0


def key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` (``--model-arg``) -> (key, value); VALUE parsed as JSON (numbers, true/false, lists), else kept
    as a string.

    Examples:
        >>> key_value("depth=7"), key_value("airlight_method=dark_channel"), key_value("dilations=[1, 2, 4]")
        (('depth', 7), ('airlight_method', 'dark_channel'), ('dilations', [1, 2, 4]))
        >>> key_value("depth")
        Traceback (most recent call last):
        ...
        ValueError: --model-arg takes KEY=VALUE, got 'depth'
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--model-arg takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
