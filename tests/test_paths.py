"""tfdehaze.paths: writes that fail half way (a full disk, a file-size limit) leave the previous file intact."""
import errno
import os
import resource

import numpy as np
import pytest
from harness import HalfWriter

from tfdehaze import paths
from tfdehaze.data import io

ENOSPC = os.strerror(errno.ENOSPC)


def fill_disk(monkeypatch):
    """From now on every file `tfdehaze.paths` opens for writing takes half of the first write, then fails with
    ENOSPC; returns the list of files it opened for writing."""
    def fake_open(file, mode="r", *args, **kwargs):
        real = open(file, mode, *args, **kwargs)
        if set(mode) & set("wax"):
            opened.append(str(file))
            return HalfWriter(real)
        return real

    opened = []
    monkeypatch.setattr(paths, "open", fake_open, raising=False)
    return opened


def test_atomic_write_failing_half_way_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_text('{"old": true}\n')
    full_disk = fill_disk(monkeypatch)
    with pytest.raises(OSError) as error:
        paths.atomic_write(target, '{"new": true, "padding": "' + "x" * 1000 + '"}\n')
    assert full_disk  # the failing write did happen
    assert error.value.errno == errno.ENOSPC
    assert str(error.value) == f"cannot write {target}: {ENOSPC}; the previous config.json is unchanged"
    assert target.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temporary left


def test_output_image_failing_half_way_keeps_the_old_image(tmp_path, monkeypatch):
    old = io.write_image(tmp_path / "a.png", np.zeros((8, 8, 3)))  # written before the disk filled up
    before = old.read_bytes()
    full_disk = fill_disk(monkeypatch)
    with pytest.raises(OSError, match=f"cannot write {old}: {ENOSPC}; the previous a.png is unchanged"):
        io.write_image(old, np.random.default_rng(0).random((64, 64, 3)))
    assert full_disk and old.read_bytes() == before
    assert io.decode(old).shape == (8, 8, 3)
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'b.png'}: {ENOSPC}$"):
        io.write_image(tmp_path / "b.png", np.zeros((8, 8, 3)))  # no previous file: nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.parametrize("writer", ["atomic_write", "atomic_save"])
def test_a_real_write_cut_off_by_a_file_size_limit_keeps_the_old_file(tmp_path, writer):
    """Whatever the writer does inside, a real partial write (RLIMIT_FSIZE makes write() stop part way and fail
    with EFBIG; Python ignores SIGXFSZ) must not touch the old file."""
    target = tmp_path / "metrics.csv"
    target.write_bytes(b"step,loss\n1,0.5\n")
    data = os.urandom(1 << 20)

    def save(tmp):
        with open(tmp, "wb") as file:
            file.write(data)

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))
    try:
        with pytest.raises(OSError) as error:
            paths.atomic_write(target, data) if writer == "atomic_write" else paths.atomic_save(target, save)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert error.value.errno == errno.EFBIG
    assert str(error.value) == (f"cannot write {target}: {os.strerror(errno.EFBIG)}; the previous metrics.csv is "
                                "unchanged")
    assert target.read_bytes() == b"step,loss\n1,0.5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
