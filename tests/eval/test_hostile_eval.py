"""tfdehaze-eval with hostile inputs, as the installed console script: images above the pixel limit are named before
anything is scored (``--max-pixels`` and ``TFDEHAZE_MAX_PIXELS``), and a broken model file is one line naming it."""
import os
import subprocess

import pytest
from harness import script

from tfdehaze.data import io


def run(*args, **env):
    environment = {k: v for k, v in os.environ.items() if k != io.MAX_PIXELS_ENV}
    return subprocess.run([script("tfdehaze-eval"), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**environment, **env})


def one_error_line(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@pytest.fixture
def data(tmp_path, rng):
    for name in ("a.png", "b.png"):
        io.write_image(tmp_path / "toy" / "clear" / name, rng.random((16, 24, 3)))
        io.write_image(tmp_path / "toy" / "hazy" / name, rng.random((16, 24, 3)))
    return tmp_path / "toy" / "hazy", tmp_path / "toy" / "clear"


def test_pixel_limit_checked_before_scoring(tmp_path, data):
    out = tmp_path / "eval"
    for extra, env in ((["--max-pixels", 383], {}), ([], {io.MAX_PIXELS_ENV: "383"})):
        line = one_error_line(run("dcp", "--data", *data, "--out", out, "--quiet", *extra, **env))
        assert "nothing was scored" in line and "limit of 383" in line
        for name in ("a.png", "b.png"):  # all four images named, each 24 x 16 = 384 pixels
            assert f"{data[0] / name}: image is 24 x 16 (width x height) = 384 pixels" in line
            assert str(data[1] / name) in line
        assert not (out / "per_image.csv").exists()


def test_broken_model_file(tmp_path, data):
    model = tmp_path / "damaged.keras"
    model.write_bytes(b"PK\x03\x04 cut short")
    line = one_error_line(run(model, "--data", *data, "--out", tmp_path / "eval", "--quiet"))
    assert f"{model}: not a Keras model file" in line
    assert not (tmp_path / "eval" / "per_image.csv").exists()
