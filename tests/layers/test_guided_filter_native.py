"""The guided filter's C++ kernel (`tfdehaze.layers.native`): forward and custom gradient against the TensorFlow (XLA)
path, explicit windows and autodiff; flat windows; graphs, tf.function, MirroredStrategy; `portable` and export; the
compiled library's cache and atomic build; the fallback under TFDEHAZE_NATIVE=0."""
import os
import pathlib
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.layers import native
from tfdehaze.layers.guided_filter import GuidedFilter, guided_filter, portable

pytestmark = pytest.mark.skipif(
    not native.available(),
    reason="the guided filter's C++ kernel is unavailable (TFDEHAZE_NATIVE=0, no g++, or it failed to compile: see "
           "the warning above)")

REPO = pathlib.Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------------- references
def naive_guided(guide, x, r, eps):
    """He et al.'s eqs. 11-18 with explicit windows clipped to the image (float64); guide (N, H, W, 1)."""
    guide, x = np.asarray(guide, np.float64), np.asarray(x, np.float64)

    def box(u):
        out = np.empty_like(u)
        for i in range(u.shape[1]):
            for j in range(u.shape[2]):
                out[:, i, j] = u[:, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].mean(axis=(1, 2))
        return out

    mean_i, mean_x = box(guide), box(x)
    var = box(guide * guide) - mean_i ** 2
    a = np.where(var > 1e-12, (box(guide * x) - mean_i * mean_x) / (var + eps), 0.0)
    return box(a) * guide + box(mean_x - a * mean_i)


def image(rng, n, h, w, c):
    """Smooth structure, an edge and noise in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w, 2)
    base = 0.5 + 0.3 * np.sin(6 * xx + rng.uniform(0, 6, (n, 1, 1))) * np.cos(4 * yy) + 0.15 * (xx > 0.5)
    return np.clip(base[..., None] + 0.05 * rng.standard_normal((n, h, w, c)), 0, 1).astype(np.float32)


def vjp(fn, guide, x, dy, watch=("guide", "x")):
    guide, x = tf.constant(guide), tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch([t for name, t in (("guide", guide), ("x", x)) if name in watch])
        y = fn(guide, x)
    grads = tape.gradient(y, [guide, x], output_gradients=tf.constant(dy))
    return [y.numpy()] + [None if g is None else g.numpy() for g in grads]


def op_types(fn, *args):
    """Op types of fn's concrete graph and of every function in its library."""
    graph_def = tf.function(fn).get_concrete_function(*args).graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def assert_close(actual, expected, rtol):
    """Error below rtol times the largest magnitude of expected (float32 round-off is relative to the scale)."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.abs(expected).max())


CASES = [  # n, h, w, c, r
    (2, 37, 53, 3, 0),
    (2, 37, 53, 3, 4),
    (1, 37, 53, 1, 16),
    (2, 20, 23, 2, 30),  # r larger than the image
    (1, 9, 7, 1, 50),  # image smaller than the window
    (1, 1, 13, 2, 3),  # one row
    (1, 12, 1, 1, 2),  # one column
    (1, 70, 96, 1, 8),  # wide enough for the segmented row sums
]


# ---------------------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("n, h, w, c, r", CASES)
def test_forward_matches_explicit_windows_and_the_xla_path(rng, n, h, w, c, r):
    guide, x = image(rng, n, h, w, 1), rng.random((n, h, w, c)).astype(np.float32)
    eps = 1e-3
    assert "TfdehazeGuidedFilter" in op_types(lambda g, v: guided_filter(g, v, r, eps), guide, x)
    y = guided_filter(guide, x, r, eps).numpy()
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, naive_guided(guide, x, r, eps), rtol=0, atol=5e-7)
    with portable():
        np.testing.assert_allclose(y, guided_filter(guide, x, r, eps).numpy(), rtol=0, atol=2e-5)


def test_rgb_guide_and_the_layer(rng):
    """An RGB guide is made gray before the kernel; the Keras layer (float32) takes the same path."""
    guide, x = rng.random((2, 24, 30, 3)).astype(np.float32), rng.random((2, 24, 30, 2)).astype(np.float32)
    gray = tf.image.rgb_to_grayscale(guide).numpy()
    y = GuidedFilter(radius=3, eps=1e-3)(guide, x).numpy()
    np.testing.assert_allclose(y, naive_guided(gray, x, 3, 1e-3), rtol=0, atol=5e-7)
    assert "TfdehazeGuidedFilter" in op_types(lambda g, v: GuidedFilter(3, 1e-3)(g, v), guide, x)


# -------------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("n, h, w, c, r, jit", [(2, 17, 23, 3, 1, True), (2, 11, 9, 2, 40, False),
                                                (1, 70, 40, 1, 5, False)])  # 2 blocks of rows on 2 threads
@pytest.mark.parametrize("watch", [("guide", "x"), ("x",)])
def test_gradients_match_the_xla_custom_gradient_and_autodiff(rng, n, h, w, c, r, jit, watch):
    """float32: the kernel's gradients against Algorithm 2 on the TensorFlow path (XLA, or without to spare
    compilations) and TF autodiff of the Python forward (custom_gradient=False, without XLA; float32 and float64);
    with the guide's gradient and for x alone (a constant guide)."""
    guide, x = image(rng, n, h, w, 1), rng.random((n, h, w, c)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    eps = 1e-3
    got = vjp(lambda g, v: guided_filter(g, v, r, eps), guide, x, dy, watch)
    with portable():
        xla = vjp(lambda g, v: guided_filter(g, v, r, eps, jit_compile=jit), guide, x, dy, watch)
    autodiff = lambda g, v: guided_filter(g, v, r, eps, jit_compile=False, custom_gradient=False)  # noqa: E731
    auto = vjp(autodiff, guide, x, dy, watch)
    exact = vjp(autodiff, guide.astype(np.float64), x.astype(np.float64), dy.astype(np.float64), watch)
    for k, name in ((1, "guide"), (2, "x")):
        if name not in watch:
            assert got[k] is None
            continue
        assert_close(got[k], exact[k], 5e-7)  # float32 in, double inside: round-off of the inputs and outputs
        assert_close(got[k], xla[k], 2e-5)  # the TensorFlow path computes in float32
        assert_close(got[k], auto[k], 2e-5)
    assert np.abs(got[2]).max() > 1e-2 and ("guide" not in watch or np.abs(got[1]).max() > 1e-3)


@pytest.mark.parametrize("eps", [1e-3, 1e-30])
def test_flat_guide_windows_get_a_zero(rng, eps):
    """A window where the guide is flat gets a = 0 exactly (the saved coefficients), whatever eps: there
    y = f(f(x)), nothing flows through cov and the guide's gradient is 0 where all windows of windows are flat.
    Values and x's gradient equal the float64 TF path's (whose var is round-off there: ±1e-17 / eps for a)."""
    guide = rng.random((1, 48, 64, 1)).astype(np.float32)
    guide[:, :, :40] = 0.3
    x = rng.random((1, 48, 64, 2)).astype(np.float32)
    r = 4
    ops = native.load()
    y, saved = getattr(ops, native.FORWARD)(guide, x, radius=r, eps=eps, keep=2)
    saved = saved.numpy()  # [f(I), s, a (C), f(x) (C), f(a) (C)]
    flat = (slice(None), slice(None), slice(0, 40 - r))  # windows inside the flat part
    assert (saved[:, 1][flat] == 0.0).all() and (saved[:, 2][flat] == 0.0).all() and (saved[:, 3][flat] == 0.0).all()
    assert np.abs(saved[:, 2:4, :, 40 + r:]).min() > 0.0  # and not elsewhere
    inner = (slice(None), slice(None), slice(0, 40 - 2 * r))
    box = naive_guided(np.full_like(guide, 0.3), x, r, eps)  # flat guide everywhere: y = f(f(x))
    np.testing.assert_allclose(y.numpy()[inner], box[inner], rtol=0, atol=1e-6)
    got = vjp(lambda g, v: guided_filter(g, v, r, eps), guide, x, np.ones_like(x))
    exact = vjp(lambda g, v: guided_filter(g, v, r, eps, jit_compile=False), guide.astype(np.float64),
                x.astype(np.float64), np.ones(x.shape))
    assert all(np.isfinite(g).all() for g in got)
    assert_close(got[0], exact[0], 1e-5)
    assert_close(got[2], exact[2], 1e-5)
    assert (got[1][inner] == 0.0).all()
    away = (slice(None), slice(None), slice(40 + 2 * r, None))
    assert_close(got[1][away], exact[1][away], 1e-5)


# ------------------------------------------------------------------------------------------------- graphs, devices
def test_inside_tf_function_and_symbolic_gradients(rng):
    """Taped in a tf.function, and tf.gradients without a tape (the forward keeps nothing, the backward reruns it)."""
    guide, x = image(rng, 2, 19, 25, 1), rng.random((2, 19, 25, 2)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    eager = vjp(lambda g, v: guided_filter(g, v, 3, 1e-3), guide, x, dy)

    @tf.function
    def taped(g, v):
        with tf.GradientTape() as tape:
            tape.watch([g, v])
            y = guided_filter(g, v, 3, 1e-3)
        return [y] + tape.gradient(y, [g, v], output_gradients=dy)

    @tf.function
    def symbolic(g, v):
        return tf.gradients(guided_filter(g, v, 3, 1e-3), [g, v], grad_ys=dy)

    for got, want in zip(taped(guide, x), eager):
        np.testing.assert_array_equal(got.numpy(), want)
    for got, want in zip(symbolic(guide, x), eager[1:]):
        np.testing.assert_array_equal(got.numpy(), want)


MIRRORED = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfdehaze.layers.guided_filter import guided_filter
rng = np.random.default_rng(0)
guide = rng.random((4, 16, 20, 1)).astype(np.float32)
x = rng.random((4, 16, 20, 2)).astype(np.float32)

def step(g, v):
    with tf.GradientTape() as tape:
        tape.watch([g, v])
        loss = tf.reduce_sum(guided_filter(g, v, 3, 1e-3) ** 2)
    return tape.gradient(loss, [g, v])

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((guide, x)).batch(4))
two = tf.function(lambda batch: strategy.run(step, args=batch))(next(iter(data)))
two = [np.concatenate([t.numpy() for t in strategy.experimental_local_results(g)]) for g in two]
one = [t.numpy() for t in step(tf.constant(guide), tf.constant(x))]
graph = tf.function(step).get_concrete_function(tf.constant(guide), tf.constant(x)).graph
assert any(op.type == "TfdehazeGuidedFilterGrad" for op in graph.get_operations())
for a, b in zip(two, one):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
from tfdehaze.layers import native
print("replicas", strategy.num_replicas_in_sync, "library", native.library_path())
"""


def test_mirrored_strategy_on_two_cpus_in_a_process_that_finds_the_compiled_library():
    """Two MirroredStrategy replicas (two logical CPUs) give the gradients of one device. The fresh process finds
    the compiled library (same key): no compilation, the file untouched."""
    path = native.library_path()
    assert path.is_file()
    before = path.stat().st_mtime_ns
    done = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"replicas 2 library {path}" in done.stdout
    assert "compiling" not in done.stderr and path.stat().st_mtime_ns == before


# ------------------------------------------------------------------------------------------ portable path, export
def test_portable_traces_only_tensorflow_ops(rng):
    guide, x = image(rng, 1, 16, 20, 1), rng.random((1, 16, 20, 1)).astype(np.float32)

    def grads(g, v):
        with tf.GradientTape() as tape:
            tape.watch([g, v])
            y = guided_filter(g, v, 3, 1e-3)
        return tape.gradient(y, [g, v])

    assert {"TfdehazeGuidedFilter", "TfdehazeGuidedFilterGrad"} <= op_types(grads, guide, x)
    with guided_filter.portable():  # also reachable from the function
        types = op_types(grads, guide, x)
    assert not [t for t in types if t.startswith("Tfdehaze")]
    assert not any(t.startswith("Tfdehaze") for t in op_types(grads, guide.astype(np.float64),
                                                             x.astype(np.float64)))  # float64: the TF path


def test_export_model_holds_no_custom_op(tmp_path):
    """export_model traces under portable(): TF Serving's SavedModel loader needs no tfdehaze library."""
    from tfdehaze.export import export_model

    images = keras.Input((None, None, 3))
    model = keras.Model(images, GuidedFilter(radius=2, eps=1e-3, jit_compile=False)(images, images))
    folder = export_model(model, tmp_path / "gf")
    assert b"Tfdehaze" not in (folder / "saved_model.pb").read_bytes()
    loaded = tf.saved_model.load(str(folder))
    pixels = np.random.default_rng(0).random((1, 12, 10, 3)).astype(np.float32)
    out = loaded.signatures["dehaze"](images=tf.constant(pixels))["dehazed"].numpy()
    np.testing.assert_allclose(out, np.clip(model(pixels).numpy(), 0, 1), atol=2e-5)


# ------------------------------------------------------------------------------------------- loader and fallback
SLOW_COMPILER = """import pathlib, sys, time
out = pathlib.Path(sys.argv[1])
out.write_text("half")
time.sleep(0.6)
out.write_text("whole")
"""


def test_build_renames_a_finished_file_into_place(tmp_path):
    """Whoever looks while the compiler writes sees no file or the whole file, never a partial one; a failed build
    leaves neither the target nor its temporary."""
    compiler = tmp_path / "slow.py"
    compiler.write_text(SLOW_COMPILER)
    target = tmp_path / "key" / "guided_filter.so"
    seen = []
    builder = threading.Thread(target=native.build, args=(target, [sys.executable, str(compiler), "OUT"]))
    builder.start()
    while builder.is_alive():
        seen.append(target.read_text() if target.exists() else None)
        time.sleep(0.02)
    builder.join()
    assert target.read_text() == "whole" and set(seen) <= {None, "whole"} and None in seen
    assert [p.name for p in target.parent.iterdir()] == ["guided_filter.so"]
    with pytest.raises(RuntimeError, match="exited with 3"):
        native.build(tmp_path / "other" / "guided_filter.so", [sys.executable, "-c", "raise SystemExit(3)", "OUT"])
    assert not list((tmp_path / "other").iterdir())


def test_disabled_by_environment_falls_back(rng, monkeypatch):
    guide, x = image(rng, 1, 16, 20, 1), rng.random((1, 16, 20, 2)).astype(np.float32)
    native_y = guided_filter(guide, x, 3, 1e-3).numpy()
    monkeypatch.setenv("TFDEHAZE_NATIVE", "0")
    assert not native.available()
    assert not any(t.startswith("Tfdehaze") for t in op_types(lambda g, v: guided_filter(g, v, 3, 1e-3), guide, x))
    np.testing.assert_allclose(guided_filter(guide, x, 3, 1e-3).numpy(), native_y, rtol=0, atol=2e-5)


def test_a_failed_compilation_warns_once_and_falls_back(tmp_path, monkeypatch, caplog):
    """No compiler: one warning with the reason, load() gives None (not retried), the filter uses the TF path."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native, "_loaded", {})
    with caplog.at_level("WARNING", logger=native.__name__):
        assert native.load() is None and native.load() is None
    assert len(caplog.records) == 1 and "no-such-compiler" in caplog.text and "XLA" in caplog.text
    guide = np.random.default_rng(0).random((1, 8, 8, 1)).astype(np.float32)
    assert not any(t.startswith("Tfdehaze") for t in op_types(lambda g: guided_filter(g, g, 2), guide))
