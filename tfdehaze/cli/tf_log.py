"""The filter between TensorFlow's start-up log lines and the console (standard library only).

TensorFlow 2.21 logs through Abseil before anything calls ``absl::InitializeLog()``, and Abseil then writes every
message to stderr whatever ``TF_CPP_MIN_LOG_LEVEL`` says: each ``import tensorflow`` prints the notice "All log
messages before absl::InitializeLog() is called are written to STDERR", the oneDNN and "Could not find cuda drivers"
info lines, twice (two of TensorFlow's libraries carry their own copy of Abseil). No environment variable reaches
that code, so `tfdehaze.cli.quiet_tensorflow` sends stderr through this filter while TensorFlow is imported; after
the import TensorFlow honours ``TF_CPP_MIN_LOG_LEVEL`` itself.

The filter applies ``TF_CPP_MIN_LOG_LEVEL`` the way TensorFlow does (1 drops INFO, 2 also WARNING, 3 also ERROR) to
lines in TensorFlow's and Abseil's log formats only; FATAL lines and every other line (Python warnings, tracebacks)
pass unchanged. It runs as a separate process (``python -I -S tf_log.py LEVEL``, lines on stdin), so what
it passes on is written even if the importing process crashes.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator

# Abseil: "I0000 00:00:1796213616.698240    4702 port.cc:153] ..."; TensorFlow's own (tsl) logger:
# "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] ...".
_RECORD = re.compile(rb"^(?:(?P<absl>[IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ [^\s\]]+:\d+\] "
                     rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<tsl>[IWEF]) [^\s\]]+:\d+\] )")
_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def keep(line: bytes, level: int) -> bool:
    """Whether a stderr line is shown under ``TF_CPP_MIN_LOG_LEVEL=level``: a TensorFlow/Abseil log record is
    dropped when its severity (INFO 0, WARNING 1, ERROR 2) is below ``level``; Abseil's "before InitializeLog"
    notice when ``level`` >= 1. FATAL records and all other lines are kept.

    Examples:
        >>> from tfdehaze.cli.tf_log import keep
        >>> info = b"I0000 00:00:1796213616.698240    4702 cudart_stub.cc:31] Could not find cuda drivers\\n"
        >>> keep(info, 3), keep(info, 0)
        (False, True)
        >>> keep(b"E0000 00:00:1796213616.70    4702 cuda_dnn.cc:8579] Unable to register cuDNN factory\\n", 2)
        True
        >>> keep(b"Traceback (most recent call last):\\n", 3), keep(b"F0000 00:00:1.0 1 x.cc:1] abort\\n", 3)
        (True, True)
    """
    if level < 1:
        return True
    if line.rstrip(b"\r\n") == _NOTICE:
        return False
    match = _RECORD.match(line)
    if match is None:
        return True
    severity = _SEVERITY[match.group("absl") or match.group("tsl")]
    return severity >= 3 or severity >= level


def filter_lines(lines: Iterable[bytes], level: int) -> Iterator[bytes]:
    """The lines `keep` keeps, in order.

    Examples:
        >>> from tfdehaze.cli.tf_log import filter_lines
        >>> lines = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n",
        ...          b"I0000 00:00:1796213616.698240    4702 port.cc:153] oneDNN custom operations are on.\\n",
        ...          b"something else\\n"]
        >>> list(filter_lines(lines, 3))
        [b'something else\\n']
    """
    return (line for line in lines if keep(line, level))


def main(argv: list[str] | None = None) -> int:
    """``python -S tf_log.py LEVEL``: copy stdin to stderr through `filter_lines`, line by line, until end of file.

    Examples:
        >>> import subprocess, sys
        >>> from tfdehaze.cli import tf_log
        >>> done = subprocess.run([sys.executable, "-S", tf_log.__file__, "3"], capture_output=True,
        ...                       input=b"I0000 00:00:1.0    1 port.cc:153] oneDNN custom operations are on.\\nkept\\n")
        >>> done.returncode, done.stderr
        (0, b'kept\\n')
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        level = int(argv[0])
    except (IndexError, ValueError):
        level = 0
    out = sys.stderr.buffer
    for line in filter_lines(sys.stdin.buffer, level):
        out.write(line)
        out.flush()
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the command whose output this passes on
    sys.exit(main())
