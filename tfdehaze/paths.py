"""Where tfdehaze keeps files it makes itself: the bundled sample set and converted weights.

``$TFDEHAZE_HOME`` if set, else ``~/.cache/tfdehaze``. Nothing here is downloaded.
"""
from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Callable


def home() -> pathlib.Path:
    """The tfdehaze cache folder (created on first use): ``$TFDEHAZE_HOME``, else ``~/.cache/tfdehaze``.

    Examples:
        >>> import tempfile
        >>> from unittest import mock
        >>> tmp = tempfile.mkdtemp()
        >>> with mock.patch.dict(os.environ, TFDEHAZE_HOME=f"{tmp}/cache"):
        ...     print(home() == pathlib.Path(tmp, "cache"), home().is_dir())
        True True
    """
    root = os.environ.get("TFDEHAZE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tfdehaze")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_dir() -> pathlib.Path:
    """Folder of converted pretrained weights, e.g. ``minet_official_its.weights.h5``: `home` ``/ "weights"``.

    Examples:
        >>> import tempfile
        >>> from unittest import mock
        >>> tmp = tempfile.mkdtemp()
        >>> with mock.patch.dict(os.environ, TFDEHAZE_HOME=tmp):
        ...     print(weights_dir().relative_to(tmp), weights_dir().is_dir())
        weights True
    """
    path = home() / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_save(path: str | os.PathLike, save: Callable[[str], object]) -> pathlib.Path:
    """Call ``save(tmp)`` on a hidden temporary sibling of ``path``, then ``os.replace`` it onto ``path``.

    The temporary name ends like ``path`` (``.keras``, ``.weights.h5``, ``.png`` ...) so savers that check the
    suffix accept it. A crash or error leaves the old ``path`` untouched and no temporary behind. An `OSError`
    (a full disk, a read-only folder) is raised again, of the same type and ``errno``, with a message naming
    ``path`` (not the temporary) and saying that the previous file is unchanged.

    Examples:
        >>> import tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp(), "note.txt")
        >>> atomic_save(out, lambda tmp: pathlib.Path(tmp).write_text("new")).read_text()
        'new'
        >>> def failing(tmp):
        ...     pathlib.Path(tmp).write_text("half")
        ...     raise OSError(28, "No space left on device")
        >>> atomic_save(out, failing)
        Traceback (most recent call last):
        ...
        OSError: cannot write .../note.txt: No space left on device; the previous note.txt is unchanged
        >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
        ('new', ['note.txt'])
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    existed = path.exists()
    try:
        save(str(tmp))
        os.replace(tmp, path)
    except OSError as error:
        raise write_error(path, error, existed) from error
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_error(path: str | os.PathLike, error: OSError, existed: bool = True) -> OSError:
    """``error`` (raised while writing ``path`` or a temporary beside it) as an `OSError` of the same type and
    ``errno`` whose message names ``path`` and the reason, and says what became of the previous file.

    Examples:
        >>> import errno
        >>> error = write_error("run/metrics.csv", OSError(errno.ENOSPC, "No space left on device", "run/.tmp-1"))
        >>> str(error), error.errno == errno.ENOSPC
        ('cannot write run/metrics.csv: No space left on device; the previous metrics.csv is unchanged', True)
        >>> str(write_error("out/a.png", PermissionError(13, "Permission denied"), existed=False))
        'cannot write out/a.png: Permission denied'
    """
    path = pathlib.Path(path)
    reason = error.strerror or str(error) or type(error).__name__
    message = f"cannot write {path}: {reason}" + (f"; the previous {path.name} is unchanged" if existed else "")
    try:
        named = type(error)(message)
    except Exception:  # an OSError subclass with another constructor
        named = OSError(message)
    named.errno = error.errno
    return named


def atomic_write(path: str | os.PathLike, data: bytes | str) -> pathlib.Path:
    """Write bytes or str ``data`` to ``path`` atomically (`atomic_save` with an fsync before the rename).

    A write that fails part way (a full disk) leaves the previous ``path`` as it was and raises `OSError` naming
    ``path``.

    Examples:
        >>> import tempfile
        >>> out = atomic_write(pathlib.Path(tempfile.mkdtemp(), "manifest.csv"), "hazy,clear\\n")
        >>> out.name, out.read_bytes()
        ('manifest.csv', b'hazy,clear\\n')
    """
    data = data.encode("utf-8") if isinstance(data, str) else data

    def save(tmp):
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_save(path, save)
