"""The guided filter's CPU kernel (``guided_filter.cc``): compiled on first use, cached, loaded as a TensorFlow op.

`load` compiles the C++ source beside this file with g++ against the installed TensorFlow (its ``tf.sysconfig``
compile and link flags, ``-O3``, ``-march=native``) into ``cache_dir() / <key> / "guided_filter.so"`` (the folder
``$TFDEHAZE_NATIVE_DIR``, default ``tfdehaze.paths.home() / "native"``), where the key hashes the source, the
TensorFlow version, the compiler and its flags and the CPU's flags (``/proc/cpuinfo``): a new source, TensorFlow,
compiler or machine builds its own copy. The library is written to a temporary file in that folder and renamed into
place (``os.replace``), so no process ever loads a half-written file, and processes starting together wait for the
one that compiles (a lock file beside it). Compiling takes about 15 s, once; one line on stderr says so.

When the kernel cannot be had (no g++, a failed compilation, a library TensorFlow refuses, not Linux/x86) `load`
logs one warning with the reason and returns None, and the guided filter uses its pure TensorFlow (XLA) path.
``TFDEHAZE_NATIVE=0`` turns the kernel off (`enabled`). ``CXX`` names another compiler.

The ops (float32, CPU only):

- ``tfdehaze_guided_filter(guide, x, radius, eps, keep)``: guide (N, H, W, 1), x (N, H, W, C) -> y (N, H, W, C) and
  ``saved`` (N, K, H, W), the window statistics the backward needs: K = 0 (keep=0, inference), 2 (keep=1: for x's
  gradient) or 2 + 3C (keep=2: also for the guide's).
- ``tfdehaze_guided_filter_grad(dy, guide, x, saved, radius, with_guide)`` -> d_guide (N, H, W, 1), or shape (0,)
  without ``with_guide``, and dx (N, H, W, C).
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import threading
import time
import uuid

SOURCE = pathlib.Path(__file__).with_name("guided_filter.cc")
LIBRARY = "guided_filter.so"
#: op names in the loaded module
FORWARD, BACKWARD = "tfdehaze_guided_filter", "tfdehaze_guided_filter_grad"

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_loaded: dict[str, object] = {}  # "module": the op library, or None after a failure (not retried in this process)


def enabled() -> bool:
    """False when ``TFDEHAZE_NATIVE=0`` (or ``false``/``no``/``off``): the guided filter then never uses the kernel.

    Examples:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, TFDEHAZE_NATIVE="0"):
        ...     enabled()
        False
    """
    return os.environ.get("TFDEHAZE_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_flags() -> str:
    """The CPU's feature flags (first ``flags`` line of /proc/cpuinfo), '' when unknown."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return ""


def _command(compiler: str, source: pathlib.Path, output: pathlib.Path) -> list[str]:
    """The compiler's command line: TensorFlow's flags, -O3, C++17, and -march=native when the CPU is known (the
    cache key includes its flags). TensorFlow's flags set -D_GLIBCXX_USE_CXX11_ABI (1 for pip wheels since 2.9)."""
    import tensorflow as tf

    flags = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd", "-Wno-deprecated-declarations"]
    cpu = _cpu_flags().split()
    if cpu and platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
        if "avx512_fp16" in cpu:  # Eigen's AVX512-FP16 packets do not compile with g++ 12
            flags.append("-mno-avx512fp16")
    return ([compiler] + flags + [str(source), "-o", str(output)] + list(tf.sysconfig.get_compile_flags())
            + list(tf.sysconfig.get_link_flags()))


def _compiler_version(compiler: str) -> str:
    done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()[0] if done.stdout else ""


def cache_dir() -> pathlib.Path:
    """``$TFDEHAZE_NATIVE_DIR``, else ``tfdehaze.paths.home() / "native"``: where compiled kernels are kept.

    Examples:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, TFDEHAZE_NATIVE_DIR="/opt/kernels"):
        ...     cache_dir().as_posix()
        '/opt/kernels'
    """
    from tfdehaze import paths

    folder = os.environ.get("TFDEHAZE_NATIVE_DIR")
    return pathlib.Path(folder).expanduser() if folder else paths.home() / "native"


def library_path(compiler: str | None = None) -> pathlib.Path:
    """Where the compiled kernel for this source, TensorFlow, compiler (default ``$CXX`` or g++) and CPU lives (it
    may not exist yet): ``cache_dir() / <key> / "guided_filter.so"``.

    Examples:
        >>> path = library_path()
        >>> path.name, path.parent.parent == cache_dir()
        ('guided_filter.so', True)
    """
    import tensorflow as tf

    compiler = compiler or os.environ.get("CXX") or "g++"
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), tf.__version__.encode(), _compiler_version(compiler).encode(),
                 " ".join(_command(compiler, pathlib.Path("SRC"), pathlib.Path("OUT"))).encode(),
                 _cpu_flags().encode(), platform.machine().encode()):
        key.update(hashlib.sha256(part).digest())
    return cache_dir() / key.hexdigest()[:20] / LIBRARY


def build(target: pathlib.Path, command: list[str]) -> pathlib.Path:
    """Run ``command`` (with the placeholder ``OUT`` for its output file) so that its output appears at ``target``
    atomically: the compiler writes a temporary file in target's folder, renamed onto target when it succeeded.
    Raises RuntimeError with the compiler's last lines when it fails.

    Examples:
        >>> import tempfile
        >>> target = pathlib.Path(tempfile.mkdtemp(), "lib", "out.so")
        >>> write = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write('built')", "OUT"]
        >>> build(target, write).read_text(), sorted(p.name for p in target.parent.iterdir())
        ('built', ['out.so'])
        >>> build(target, [sys.executable, "-c", "raise SystemExit('no compiler here')", "OUT"])
        Traceback (most recent call last):
        ...
        RuntimeError: ... exited with 1: no compiler here
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{target.name}")
    try:
        done = subprocess.run([str(tmp) if part == "OUT" else part for part in command], capture_output=True,
                              text=True, timeout=900)
        if done.returncode != 0 or not tmp.is_file():
            tail = " | ".join(line for line in (done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"{command[0]} exited with {done.returncode}: {tail}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _compile_and_load():
    import tensorflow as tf

    if platform.system() != "Linux":
        raise RuntimeError(f"the kernel is built on Linux only (this is {platform.system()})")
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler!r} not found; install g++ or set CXX)")
    target = library_path(compiler)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)       # another process may be compiling it: wait, then use its file
            if not target.is_file():
                print(f"tfdehaze: compiling the guided filter's CPU kernel (once, ~15 s) into {target}",
                      file=sys.stderr, flush=True)
                start = time.perf_counter()
                build(target, _command(compiler, SOURCE, pathlib.Path("OUT")))
                _log.info("compiled %s in %.1f s", target, time.perf_counter() - start)
    return tf.load_op_library(str(target))


def load() -> object | None:
    """The op library (a module with `FORWARD` and `BACKWARD`), compiled on first use; None when it cannot be had
    (one warning says why; not retried in this process).

    Examples:
        >>> ops = load()
        >>> ops is None or hasattr(ops, FORWARD) and hasattr(ops, BACKWARD)
        True
    """
    with _lock:
        if "module" not in _loaded:
            try:
                _loaded["module"] = _compile_and_load()
            except Exception as error:  # noqa: BLE001 - any failure means: use the portable path
                _log.warning("tfdehaze: the guided filter's CPU kernel is unavailable (%s); using the TensorFlow "
                             "(XLA) path", error)
                _loaded["module"] = None
        return _loaded["module"]


def available() -> bool:
    """Whether the kernel is enabled and loads (compiling it if needed).

    Examples:
        >>> isinstance(available(), bool)
        True
    """
    return enabled() and load() is not None
