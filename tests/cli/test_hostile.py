"""Hostile inputs to the installed console scripts (issue 15 §3, §6): a decompression bomb, a bad file in a batch,
a truncated training image, broken model files, option combinations and sizes a model cannot take, and ``--out .``
from the inputs' own folder. Each command runs as users run it, in a subprocess; each test checks the exit status,
the one-line message and that nothing was written."""
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib

import numpy as np
import pytest
from harness import script

from tfdehaze.data import io

GB = 2 ** 30


def run(name, *args, cwd=None, timeout=120, **env):
    environment = {k: v for k, v in os.environ.items() if k != io.MAX_PIXELS_ENV}
    return subprocess.run([script(name), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**environment, **env})


def assert_one_line_error(proc, *words):
    """Exit status 2, no traceback, and an ``error:`` line holding every word."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    for word in words:
        assert str(word) in errors[0], (word, errors[0])
    return errors[0]


def tree(folder):
    """{relative path: bytes} of every file below ``folder`` (empty if it does not exist)."""
    folder = pathlib.Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def black_png(path, width, height):
    """A valid all-black 8-bit gray PNG, written without ever holding its pixels: one zlib block of 500 zero rows,
    flushed so it stands alone (Z_FULL_FLUSH), repeated. 20000 x 20000 is 0.39 MB on disk, 400 MB decoded."""
    rows = 500 if height % 500 == 0 else height
    block = bytes(width + 1) * rows  # filter byte 0 + zero pixels, per row
    compressor = zlib.compressobj(9)
    piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)  # starts with the zlib header
    adler = 1
    for _ in range(height // rows):
        adler = zlib.adler32(block, adler)
    data = piece + piece[2:] * (height // rows - 1) + b"\x03\x00" + struct.pack(">I", adler)  # + final empty block

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    pathlib.Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                                      0, 0, 0))
                                   + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return pathlib.Path(path)


def run_measured(name, *args, timeout=90, address_space=6 * GB):
    """Run a console script; returns (exit status, stdout, stderr, peak resident memory in bytes, seconds).

    The peak is the script's own ``ru_maxrss`` (os.wait4), measured by a small launcher that forks and execs it: a
    child forked straight from this test process would inherit the pytest process's high-water mark across exec.
    An address-space limit (RLIMIT_AS) keeps a broken check from eating the machine: TensorFlow itself maps about
    3 GB of address space, so the 1.5 GB bound is checked on the resident peak, not by RLIMIT_AS."""
    launcher = ("import os, resource, sys\n"
                f"resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space}))\n"
                "pid = os.fork()\n"
                "if pid == 0:\n"
                "    os.execv(sys.argv[2], sys.argv[2:])\n"
                "_, status, usage = os.wait4(pid, 0)\n"
                "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
                "sys.exit(os.waitstatus_to_exitcode(status))\n")
    env = {k: v for k, v in os.environ.items() if k != io.MAX_PIXELS_ENV}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        peak_file = pathlib.Path(tmp) / "maxrss"
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", launcher, str(peak_file), script(name), *map(str, args)],
                                stdout=out, stderr=err, env=env, start_new_session=True)
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        peak = int(peak_file.read_text()) * 1024 if peak_file.exists() else float("inf")
        return proc.returncode, out.read().decode(), err.read().decode(), peak, seconds


# ------------------------------------------------------------------------------------------------ images
def test_bomb_png_refused_quickly_in_bounded_memory(tmp_path):
    bomb = black_png(tmp_path / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 500_000
    status, _, stderr, peak, seconds = run_measured("tfdehaze-dehaze", bomb, "--out", tmp_path / "out", "--quiet")
    proc = subprocess.CompletedProcess([], status, "", stderr)
    assert_one_line_error(proc, bomb, "20000 x 20000", "400,000,000 pixels", "178,956,970", "--max-pixels",
                          io.MAX_PIXELS_ENV)
    assert peak < 1.5 * GB, f"peak resident memory {peak / GB:.2f} GB"
    assert seconds < 60
    assert not (tmp_path / "out").exists()


def test_max_pixels_flag(tmp_path):
    image = io.write_image(tmp_path / "in" / "a.png", np.full((16, 16, 3), 0.5))
    proc = run("tfdehaze-dehaze", image, "--out", tmp_path / "out", "--max-pixels", 255, "--quiet")
    assert_one_line_error(proc, image, "16 x 16", "256 pixels", "limit of 255")
    assert not (tmp_path / "out").exists()


def test_bad_file_in_a_batch_changes_nothing(tmp_path, rng):
    """All or nothing: every input is read before anything is written, so a corrupt c.png leaves out/ as it was."""
    for name in ("a.png", "b.png"):
        io.write_image(tmp_path / "in" / name, rng.random((24, 24, 3)))
        io.write_image(tmp_path / "out" / name, np.zeros((8, 8, 3)))  # an earlier run's results
    good = (tmp_path / "in" / "a.png").read_bytes()
    (tmp_path / "in" / "c.png").write_bytes(good[:len(good) // 2])  # truncated
    before = tree(tmp_path / "out")
    proc = run("tfdehaze-dehaze", tmp_path / "in", "--out", tmp_path / "out", "--quiet")
    assert tree(tmp_path / "out") == before
    assert_one_line_error(proc, tmp_path / "in" / "c.png", "truncated", "nothing was written")


def test_out_dot_from_the_inputs_folder(tmp_path, rng):
    """``tfdehaze-dehaze a.png --out .`` run from a.png's own folder would overwrite the input: refused."""
    image = io.write_image(tmp_path / "a.png", rng.random((16, 16, 3)))
    before = tree(tmp_path)
    proc = run("tfdehaze-dehaze", "a.png", "--out", ".", "--quiet", cwd=tmp_path)
    assert tree(tmp_path) == before
    assert_one_line_error(proc, "refusing to overwrite the input", image.resolve())


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture
def manifest(tmp_path, rng):
    pairs = {"hazy": [], "clear": []}
    for i in range(2):
        for folder in pairs:
            pairs[folder].append(str(io.write_image(tmp_path / folder / f"{i}.png", rng.random((24, 24, 3)))))
    csv = tmp_path / "pairs.csv"
    csv.write_text("hazy,clear\n" + "".join(f"{h},{c}\n" for h, c in zip(pairs["hazy"], pairs["clear"])))
    return csv


def test_truncated_training_images_named_before_the_run_starts(tmp_path, manifest, rng):
    import PIL.Image

    jpeg = tmp_path / "hazy" / "2.jpg"
    PIL.Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[:-200])  # cut inside the scan
    png = tmp_path / "clear" / "1.png"
    png.write_bytes(png.read_bytes()[:-30])  # last row's data and IEND gone
    with manifest.open("a") as f:
        f.write(f"{jpeg},{tmp_path / 'clear' / '0.png'}\n")
    run_dir = tmp_path / "run"
    proc = run("tfdehaze-train", "minet", "--manifest", manifest, "--steps", 1, "--batch-size", 1, "--image-size",
               16, "--model-arg", "filters=4", "--model-arg", "steps=1", "--model-arg", "reduction=2",
               "--distribute", "none", "--out", run_dir, "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert str(jpeg) in proc.stderr and str(png) in proc.stderr and "2 problem(s)" in proc.stderr
    assert not run_dir.exists()


def test_image_size_the_discriminator_cannot_take(tmp_path, manifest):
    run_dir = tmp_path / "run"
    proc = run("tfdehaze-train", "guided-pix2pix", "--manifest", manifest, "--steps", 1, "--batch-size", 1,
               "--image-size", 7, "--distribute", "none", "--out", run_dir, "--quiet")
    assert_one_line_error(proc, "image_size=7", "PatchDiscriminator", "at least 17", "sizes that work: 17")
    assert not run_dir.exists()


def test_odd_size_for_the_super_resolution_teacher(tmp_path, manifest):
    """rfd-teacher learns x2 super-resolution from half-size inputs: an odd side cannot come back to itself."""
    from tfdehaze.data import datasets
    from tfdehaze.train import get_recipe, train

    recipe = get_recipe("rfd-teacher").replace(image_size=15, batch_size=1, steps=1)
    with pytest.raises(ValueError, match=r"image_size=15 .* multiples of 2; the nearest sizes that work: 14 and 16"):
        train(recipe, pairs=datasets.read_manifest(manifest), run_dir=tmp_path / "run", distribute="none", verbose=0)
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------------------------------------- model files
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny MI-Net as a .keras file, a garbage .keras, one naming an unknown class, and run directories whose
    weights / checkpoint belong to another model."""
    import tensorflow as tf

    from tfdehaze.models import registry

    root = tmp_path_factory.mktemp("models")
    tiny = {"filters": 4, "steps": 1, "reduction": 2}
    minet = registry.load_weights(registry.build("minet", **tiny))
    minet.save(root / "tiny.keras")
    (root / "garbage.keras").write_bytes(b"this is not a zip archive")
    with zipfile.ZipFile(root / "tiny.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config.update(class_name="NoSuchNet", registered_name="tfdehaze>NoSuchNet")
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(root / "unknown.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    other = registry.load_weights(registry.build("guided-pix2pix", depth=3, base_filters=4))
    for run_name in ("wrong_weights", "wrong_checkpoint", "garbage_weights"):
        (root / run_name).mkdir()
        (root / run_name / "config.json").write_text(json.dumps({"model": "minet", "model_kwargs": tiny}))
    other.save_weights(root / "wrong_weights" / "model.weights.h5")
    tf.train.Checkpoint(model=other).save(str(root / "wrong_checkpoint" / "checkpoints" / "ckpt"))
    (root / "garbage_weights" / "model.weights.h5").write_bytes(b"not HDF5")
    return root


@pytest.mark.parametrize("name, words", [
    ("garbage.keras", ["not a Keras model file"]),
    ("unknown.keras", ["model class 'NoSuchNet' is unknown"]),
    ("wrong_weights", ["model.weights.h5", "do not fit MINet", "found no weights"]),
])
def test_broken_model_files_are_named(tmp_path, models, name, words):
    (tmp_path / "in").mkdir()
    image = io.write_image(tmp_path / "in" / "a.png", np.full((16, 16, 3), 0.5))
    proc = run("tfdehaze-dehaze", image, "--out", tmp_path / "out", "--model", models / name, "--quiet")
    assert_one_line_error(proc, models / name, *words)
    assert not (tmp_path / "out").exists()


def test_broken_model_files_in_process(models):
    from tfdehaze.models import registry

    with pytest.raises(ValueError, match=r"wrong_checkpoint/checkpoints/ckpt-1 does not fit MINet .* have no value"):
        registry.load_run(models / "wrong_checkpoint")
    with pytest.raises(ValueError, match=r"garbage_weights/model.weights.h5: not a Keras weights file"):
        registry.load_run(models / "garbage_weights")
    with pytest.raises(ValueError, match=r"garbage.keras: not a Keras model file"):
        registry.load(models / "garbage.keras")


def test_wrong_released_weights_are_named(tmp_path, models, monkeypatch):
    """A preset's weights file that belongs to another network (here: a tiny MI-Net's in minet-official's place)."""
    from tfdehaze.models import registry

    monkeypatch.setenv("TFDEHAZE_HOME", str(tmp_path))
    path = registry.weights_path("minet-official")
    path.parent.mkdir(parents=True, exist_ok=True)
    registry.load(models / "tiny.keras").save_weights(path)
    with pytest.raises(ValueError, match=r"minet_official_its.weights.h5: the weights do not fit MINetOfficial"):
        registry.load("minet-official")


def test_save_transmission_refused_before_writing(tmp_path, models):
    """A model without a transmission map and --save-transmission: refused on the first image, before any write."""
    for name in ("a.png", "b.png"):
        io.write_image(tmp_path / "in" / name, np.full((16, 16, 3), 0.5))
    proc = run("tfdehaze-dehaze", tmp_path / "in", "--out", tmp_path / "out", "--model", models / "tiny.keras",
               "--save-transmission", "--quiet")
    assert_one_line_error(proc, "gives no transmission map", "--save-transmission", "nothing was written")
    assert tree(tmp_path / "out") == {}
