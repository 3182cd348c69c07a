"""Thin command-line entry points: argument parsing only; the work is done by the package API.

Every command reports a user error (bad file, bad value, bad flag) as one ``<prog>: error: ...`` message on stderr
with exit code 2, never a traceback: parse with `Parser`, run with `run_cli`.

Arguments are parsed before TensorFlow is imported (the parsers import no TensorFlow), so a bad argument costs no
TensorFlow start-up and prints its one line only. TensorFlow's C++ log is quiet unless the user sets
``TF_CPP_MIN_LOG_LEVEL`` (default here: 3); `quiet_tensorflow` (``run_cli(..., tensorflow=True)``) also filters the
start-up lines that TensorFlow prints before that setting takes effect (see `tfdehaze.cli.tf_log`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import NoReturn

from tfdehaze.cli import tf_log

# CLI users need no cuInit/oneDNN notices; a level the user set is kept (0 shows everything).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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


def run_cli(prog: str, job: Callable[[], object], fatal: tuple[type[BaseException], ...] = (),
            tensorflow: bool = False) -> int:
    """Run ``job``; ValueError/OSError exit with code 2 and ``fatal`` exceptions with code 1, each as one
    ``<prog>: error: <message>`` line on stderr (KeyboardInterrupt: code 130). Returns 0 on success.
    ``tensorflow``: import TensorFlow first with `quiet_tensorflow` (the console scripts, whose jobs all use it).

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
        if tensorflow:
            quiet_tensorflow()
        job()
    except fatal as err:
        _fail(prog, str(err), code=1)
    except (ValueError, OSError) as err:
        _fail(prog, str(err) or type(err).__name__)
    except KeyboardInterrupt:
        _fail(prog, "interrupted", code=130)
    return 0


def quiet_tensorflow() -> None:
    """Import TensorFlow (once) with its start-up log lines filtered by ``TF_CPP_MIN_LOG_LEVEL``.

    TensorFlow 2.21 prints about six Abseil lines on import (the "before absl::InitializeLog()" notice, oneDNN and
    CUDA-stub info, twice) whatever ``TF_CPP_MIN_LOG_LEVEL`` says: no setting reaches that code. So stderr (file
    descriptor 2, where C++ writes) goes through `tfdehaze.cli.tf_log` in a child process during the import only:
    records below the level are dropped, FATAL records and every other line (warnings, tracebacks) pass, and what
    passes is written even if this process dies. With ``TF_CPP_MIN_LOG_LEVEL=0`` nothing is filtered.

    Examples:
        >>> import sys
        >>> from tfdehaze.cli import quiet_tensorflow
        >>> quiet_tensorflow()
        >>> "tensorflow" in sys.modules
        True
    """
    if "tensorflow" in sys.modules:
        return
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    saved = filter_process = None
    if level >= 1:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            filter_process = subprocess.Popen([sys.executable, "-I", "-S", tf_log.__file__, str(level)],
                                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                              start_new_session=True)
            saved = os.dup(2)
            os.dup2(filter_process.stdin.fileno(), 2)
        except (OSError, ValueError):  # no child process or no stderr here: import unfiltered
            if saved is not None:
                os.close(saved)
                saved = None
    try:
        import tensorflow  # noqa: F401
    finally:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        if filter_process is not None:
            filter_process.stdin.close()
            try:
                filter_process.wait(timeout=10)  # its lines come before anything printed next
            except subprocess.TimeoutExpired:
                pass


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
