"""Where tfdehaze keeps files it makes itself: the bundled sample set and converted weights.

``$TFDEHAZE_HOME`` if set, else ``~/.cache/tfdehaze``. Nothing here is downloaded.
"""
import os
import pathlib
import uuid


def home() -> pathlib.Path:
    """The tfdehaze cache folder (created on first use)."""
    root = os.environ.get("TFDEHAZE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tfdehaze")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_dir() -> pathlib.Path:
    """Folder of converted pretrained weights, e.g. ``minet_official_its.weights.h5``."""
    path = home() / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_save(path, save) -> pathlib.Path:
    """Call ``save(tmp)`` on a hidden temporary sibling of ``path``, then ``os.replace`` it onto ``path``.

    The temporary name ends like ``path`` (``.keras``, ``.weights.h5``, ``.png`` ...) so savers that check the
    suffix accept it. A crash or error leaves the old ``path`` untouched and no temporary behind.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        save(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write(path, data) -> pathlib.Path:
    """Write bytes or str ``data`` to ``path`` atomically (`atomic_save` with an fsync before the rename)."""
    data = data.encode("utf-8") if isinstance(data, str) else data

    def save(tmp):
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_save(path, save)
