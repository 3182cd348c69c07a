"""The one compiled predict path (`tfdehaze.inference.make_dehazer`): a folder of mixed sizes traces a bounded number
of times, for models and for the dark-channel baseline, with the same outputs as eager calls; ``precision`` loads a
model under a mixed policy with float32 outputs."""
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze import inference
from tfdehaze.data.io import write_image
from tfdehaze.models import registry

SIZES = [(33, 40), (48, 48), (50, 37), (64, 20), (29, 61)]


@pytest.fixture
def folder(tmp_path, rng):
    for i, (h, w) in enumerate(SIZES):
        write_image(tmp_path / "in" / f"{i}.png", rng.uniform(0.2, 0.9, size=(h, w, 3)))
    return tmp_path


@pytest.mark.parametrize("kind", ["dcp", "minet", "guided-pix2pix"])
def test_five_sizes_trace_at_most_twice_and_match_eager(folder, kind):
    if kind == "dcp":
        dehazer, eager = inference.make_dehazer("dcp"), None
    else:
        kwargs = {"minet": {"filters": 4, "steps": 1}, "guided-pix2pix": {"depth": 3, "base_filters": 4,
                                                                            "radius": 2}}[kind]
        net = registry.build(kind, **kwargs)
        dehazer, eager = inference.make_dehazer(model=net), net
    written = inference.dehaze_files([folder / "in"], folder / "out", dehazer=dehazer, progress=False)
    assert len(written) == len(SIZES)
    assert dehazer.tracing_count() <= 2, dehazer.tracing_count()     # not one trace per size
    x = tf.random.stateless_uniform([1, 45, 38, 3], seed=[1, 2])
    got = dehazer(x)["dehazed"]
    want = (eager(x, training=False)["dehazed"] if eager is not None
            else __import__("tfdehaze.physics", fromlist=["dcp_dehaze"]).dcp_dehaze(x)["dehazed"])
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    assert dehazer.tracing_count() <= 2


def test_tiled_inference_reuses_the_compiled_function(rng):
    net = registry.build("minet", filters=4, steps=1)
    dehazer = inference.make_dehazer(model=net, tile=32, overlap=8)
    for h, w in SIZES:
        out = dehazer(tf.constant(rng.uniform(size=(1, h, w, 3)), tf.float32))
        assert out["dehazed"].shape == (1, h, w, 3)
    assert dehazer.tracing_count() <= 2


def test_precision_loads_a_named_model_under_the_policy(tmp_path):
    net = registry.build("minet", filters=4, steps=1)
    net(tf.zeros([1, 16, 16, 3]))
    net.save(tmp_path / "m.keras")
    x = tf.random.stateless_uniform([1, 24, 24, 3], seed=[3, 4])
    full = inference.make_dehazer(model=tmp_path / "m.keras", precision="float32")(x)["dehazed"]
    half = inference.make_dehazer(model=tmp_path / "m.keras", precision="mixed_bfloat16")(x)["dehazed"]
    assert half.dtype == tf.float32
    error = float(tf.reduce_mean(tf.abs(full - half)))
    scale = float(tf.reduce_mean(tf.abs(full - x)))  # what the network changes
    assert 0 < error < 0.05 * scale, (error, scale)   # bfloat16 inside: close, not bit-identical


def test_io_overlaps_the_model_and_a_failed_write_stops_the_run(folder, monkeypatch):
    """Reading the next image and writing the last one run beside the model (one thread of I/O each way), outputs
    keep the input order, and a write that fails stops the run with its error; earlier outputs stay complete."""
    import threading

    from tfdehaze.data import io

    threads, real_write = set(), io.write_image

    def write(path, image):
        threads.add(threading.current_thread().name)
        if path.name == "2.png":
            raise OSError(28, f"cannot write {path}: No space left on device")
        return real_write(path, image)

    monkeypatch.setattr(io, "write_image", write)
    with pytest.raises(OSError, match=r"cannot write .*2\.png: No space left"):
        inference.dehaze_files([folder / "in"], folder / "out", dehazer=lambda b: {"dehazed": 1.0 - b},
                               progress=False)
    assert threads and not threads & {threading.main_thread().name}       # written off the main thread
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["0.png", "1.png"]
    np.testing.assert_allclose(io.read_image(folder / "out" / "1.png"),
                               1.0 - io.read_image(folder / "in" / "1.png"), atol=1 / 255)
    monkeypatch.setattr(io, "write_image", real_write)
    written = inference.dehaze_files([folder / "in"], folder / "out2", dehazer=lambda b: {"dehazed": 1.0 - b},
                                     progress=False)
    assert [p.name for p in written] == [f"{i}.png" for i in range(len(SIZES))]
