"""GuidedFilter: forward against naive windows and OpenCV, custom gradient against autodiff and finite differences."""
import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.layers.guided_filter import GuidedFilter, box_filter, guided_filter


# ------------------------------------------------------------------------------------------ independent references
def naive_box(x, r):
    """Mean over the explicit window part inside the image, pixel by pixel (numpy, float64)."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            out[:, i, j] = x[:, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].mean(axis=(1, 2))
    return out


def naive_guided(guide, x, r, eps):
    """He et al.'s formulas (eqs. 11-18) with explicit windows; guide (N, H, W, 1), x (N, H, W, C)."""
    guide, x = np.asarray(guide, np.float64), np.asarray(x, np.float64)
    c = x.shape[-1]
    st = naive_box(np.concatenate([guide, guide * guide, x, guide * x], -1), r)
    mean_i, corr_i, mean_x, corr_ix = st[..., :1], st[..., 1:2], st[..., 2:2 + c], st[..., 2 + c:]
    a = (corr_ix - mean_i * mean_x) / (corr_i - mean_i ** 2 + eps)
    b = mean_x - a * mean_i
    ab = naive_box(np.concatenate([a, b], -1), r)
    return ab[..., :c] * guide + ab[..., c:]


def plain_box(x, r):
    """Count-normalised box filter by tf.cumsum of the zero-padded image (plain TF, differentiable by autodiff)."""
    def sums(v, axis, n):
        rr = min(r, n - 1)
        pad = [[0, 0]] * 4
        pad[axis] = [rr + 1, rr]
        s = tf.cumsum(tf.pad(v, pad), axis=axis)
        return tf.gather(s, tf.range(2 * rr + 1, 2 * rr + 1 + n), axis=axis) - tf.gather(s, tf.range(n), axis=axis)

    h, w = x.shape[1], x.shape[2]
    count = sums(sums(tf.ones_like(x[:1, :, :, :1]), 1, h), 2, w)
    return sums(sums(x, 1, h), 2, w) / count


def plain_guided(guide, x, r, eps):
    """Algorithm 1 in plain TF, no custom gradient: autodiff of this is the reference gradient."""
    if guide.shape[-1] == 3:
        guide = tf.image.rgb_to_grayscale(guide)
    mean_i, mean_x = plain_box(guide, r), plain_box(x, r)
    var = plain_box(guide * guide, r) - mean_i * mean_i
    cov = tf.where(var > 0.0, plain_box(guide * x, r) - mean_i * mean_x, 0.0)  # a flat window: a = 0
    a = cov / (tf.maximum(var, 0.0) + eps)
    b = mean_x - a * mean_i
    return plain_box(a, r) * guide + plain_box(b, r)


def vjp(fn, guide, x, dy):
    guide, x = tf.constant(guide), tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch([guide, x])
        y = fn(guide, x)
        loss = tf.reduce_sum(y * dy)
    g_guide, g_x = tape.gradient(loss, [guide, x])
    return y.numpy(), g_guide.numpy(), g_x.numpy()


def assert_rel(actual, expected, rtol):
    """Per-pixel relative error <= rtol (atol only at round-off level of the largest entry)."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-6 * np.abs(expected).max())


def smooth_image(rng, n, h, w, c):
    """Random image with structure: smooth blobs, an edge and noise, in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.3 * np.sin(6 * xx + rng.uniform(0, 6, (n, 1, 1))) * np.cos(4 * yy)
    base = base + 0.15 * (xx > 0.5)
    img = base[..., None] + 0.05 * rng.standard_normal((n, h, w, c))
    return np.clip(img, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------- box filter
@pytest.mark.parametrize("h, w, r", [(13, 17, 0), (13, 17, 2), (20, 9, 4), (7, 5, 10), (33, 40, 16), (12, 50, 70)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_box_filter_matches_naive_window_mean(rng, h, w, r, dtype):
    x = rng.random((2, h, w, 3)) + 0.5
    y = box_filter(x.astype(dtype), r)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y.numpy(), naive_box(x, r), rtol=0, atol=1e-6 if dtype == np.float32 else 1e-13)


def test_box_filter_radius_beyond_image_gives_image_mean(rng):
    x = rng.random((1, 6, 9, 2)).astype(np.float32)
    np.testing.assert_allclose(box_filter(x, 100).numpy(), np.broadcast_to(x.mean((1, 2), keepdims=True), x.shape),
                               atol=1e-6)


# ----------------------------------------------------------------------------------------- forward references
@pytest.mark.parametrize("r, eps", [(1, 1e-3), (3, 1e-4), (30, 1e-2)])
def test_forward_matches_naive_numpy_everywhere(rng, r, eps):
    guide, x = smooth_image(rng, 2, 20, 23, 1), rng.random((2, 20, 23, 2))
    expected = naive_guided(guide, x, r, eps)
    np.testing.assert_allclose(guided_filter(guide, x, r, eps).numpy(), expected, rtol=0, atol=1e-10)
    y32 = guided_filter(guide.astype(np.float32), x.astype(np.float32), r, eps)
    assert y32.dtype == tf.float32
    np.testing.assert_allclose(y32.numpy(), expected, rtol=0, atol=1e-4)


def test_radius_zero_is_identity(rng):
    guide, x = rng.random((2, 9, 7, 1)), rng.random((2, 9, 7, 3))
    np.testing.assert_allclose(guided_filter(guide, x, 0, 1e-3).numpy(), x, atol=1e-12)


def test_rgb_guide_is_converted_to_gray(rng):
    guide, x = rng.random((2, 16, 18, 3)), rng.random((2, 16, 18, 1))
    gray = tf.image.rgb_to_grayscale(guide).numpy()
    np.testing.assert_allclose(guided_filter(guide, x, 3, 1e-3).numpy(), naive_guided(gray, x, 3, 1e-3), atol=1e-10)


def test_forward_on_real_photograph(reference_dir):
    """hazy_flower.jpg resized to 160x240 (RGB in [0, 1]); guide = its gray, x = the RGB image (float32).

    He et al.'s formulas with explicit windows agree everywhere, borders included. OpenCV's ximgproc.guidedFilter pads
    by reflection and divides by (2r+1)^2, so it agrees only from 2r inside the border: compare that interior.
    """
    bgr = cv2.imread(str(reference_dir / "hazy_flower.jpg"), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(cv2.resize(bgr, (240, 160), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    x = (rgb / 255.0).astype(np.float32)[None]
    gray = tf.image.rgb_to_grayscale(x).numpy()
    r, eps = 8, 1e-3
    y = GuidedFilter(r, eps)(x, x).numpy()  # 3-channel guide -> gray inside the layer
    np.testing.assert_allclose(y, naive_guided(gray, x, r, eps), rtol=0, atol=1e-4)
    ref = cv2.ximgproc.guidedFilter(gray[0, ..., 0], x[0], r, eps)
    inner = (slice(2 * r, -2 * r), slice(2 * r, -2 * r))
    np.testing.assert_allclose(y[0][inner], ref[inner], rtol=0, atol=1e-4)
    assert np.abs(y[0] - ref).max() > 1e-3  # the borders really differ (count vs (2r+1)^2 normalisation)


# ---------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("guide_c, x_c, r", [(1, 2, 1), (3, 3, 3), (1, 1, 7), (3, 2, 40)])
def test_custom_gradient_equals_autodiff(rng, guide_c, x_c, r):
    """float64, batch 2, 17x23 images; r = 40 is larger than the image. Gradients for x and the guide."""
    eps = 1e-3
    guide, x = smooth_image(rng, 2, 17, 23, guide_c), rng.random((2, 17, 23, x_c))
    dy = rng.standard_normal((2, 17, 23, x_c))
    y, g_guide, g_x = vjp(lambda g, v: guided_filter(g, v, r, eps), guide, x, dy)
    y_ref, g_guide_ref, g_x_ref = vjp(lambda g, v: plain_guided(g, v, r, eps), guide, x, dy)
    assert_rel(y, y_ref, 1e-9)
    assert_rel(g_x, g_x_ref, 1e-5)
    assert_rel(g_guide, g_guide_ref, 1e-5)
    assert np.abs(g_guide).max() > 1e-3  # the guide's gradient is not trivially zero


def test_gradient_of_x_alone_when_the_guide_is_a_constant(rng):
    """A tape that watches only x (Guided-Pix2Pix: the guide is the hazy input): the forward keeps only what dx needs
    and the backward skips the guide's half. dx still equals autodiff; in graph mode too."""
    guide, x = tf.constant(smooth_image(rng, 2, 17, 23, 3)), tf.constant(rng.random((2, 17, 23, 2)))
    dy = tf.constant(rng.standard_normal((2, 17, 23, 2)))

    def grad_x(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(guide, x, 5, 1e-3)
        return tape.gradient(y, x, output_gradients=dy)

    expected = grad_x(plain_guided).numpy()
    assert_rel(grad_x(guided_filter).numpy(), expected, 1e-5)
    assert_rel(tf.function(lambda: grad_x(guided_filter))().numpy(), expected, 1e-5)


def test_symbolic_gradients_without_a_tape(rng):
    """tf.gradients in a tf.function records no tape while the forward runs: the forward keeps nothing and the
    backward recomputes the window sums; the gradients equal the taped ones."""
    guide, x = smooth_image(rng, 1, 16, 20, 1), rng.random((1, 16, 20, 2))
    dy = rng.standard_normal(x.shape)

    @tf.function
    def symbolic(g, v):
        return tf.gradients(tf.reduce_sum(guided_filter(g, v, 3, 1e-3) * dy), [g, v])

    _, g_guide, g_x = vjp(lambda g, v: guided_filter(g, v, 3, 1e-3), guide, x, dy)
    s_guide, s_x = symbolic(tf.constant(guide), tf.constant(x))
    np.testing.assert_allclose(s_guide.numpy(), g_guide, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s_x.numpy(), g_x, rtol=1e-9, atol=1e-12)


def test_gradient_matches_central_finite_differences(rng):
    guide, x = smooth_image(rng, 1, 9, 11, 1), rng.random((1, 9, 11, 2))
    dy = rng.standard_normal((1, 9, 11, 2))
    r, eps, h = 2, 1e-2, 1e-5
    loss = lambda g, v: float(tf.reduce_sum(guided_filter(g, v, r, eps) * dy))
    _, g_guide, g_x = vjp(lambda g, v: guided_filter(g, v, r, eps), guide, x, dy)
    for _ in range(3):
        dg, dx = rng.standard_normal(guide.shape), rng.standard_normal(x.shape)
        numeric = (loss(guide + h * dg, x + h * dx) - loss(guide - h * dg, x - h * dx)) / (2 * h)
        analytic = np.sum(g_guide * dg) + np.sum(g_x * dx)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7)
    for i, j in [(0, 0), (4, 5), (8, 10)]:  # single pixels, corners included
        e = np.zeros_like(guide)
        e[0, i, j, 0] = 1.0
        numeric = (loss(guide + h * e, x) - loss(guide - h * e, x)) / (2 * h)
        np.testing.assert_allclose(g_guide[0, i, j, 0], numeric, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------------ numerics
def test_tiny_eps_on_flat_images_float32(rng):
    """The paper's eps = 1e-8 on flat / nearly flat images in float32: no NaN/Inf, sensible outputs and gradients."""
    flat = np.full((1, 64, 64, 1), 0.3, np.float32)
    noise = rng.random((1, 64, 64, 2)).astype(np.float32)
    nearly = (0.5 + 0.01 * rng.standard_normal((1, 64, 64, 1))).astype(np.float32)
    for guide, x, expected in [
        (flat, flat, flat),  # flat everything: y = x
        (flat, noise, box_filter(box_filter(noise, 8), 8).numpy()),  # flat guide: a = 0, y = f(f(x))
        (nearly, nearly, nearly),  # var >> eps: a ~ 1, edges kept, y ~ x
    ]:
        y, g_guide, g_x = vjp(lambda g, v: guided_filter(g, v, 8, 1e-8), guide, x, np.ones_like(x))
        assert np.isfinite(y).all() and np.isfinite(g_guide).all() and np.isfinite(g_x).all()
        np.testing.assert_allclose(y, expected, rtol=0, atol=2e-4)


def test_float32_accuracy_at_2048():
    """float32 against float64 at 2048², r = 8 (3.5e-6 measured): the prefix sums of centred maps stay accurate."""
    rng = np.random.default_rng(1)
    guide, x = smooth_image(rng, 1, 2048, 2048, 1), smooth_image(rng, 1, 2048, 2048, 1) * 0.5 + 0.4
    y64 = guided_filter(guide, x, 8, 1e-4).numpy()
    y32 = guided_filter(guide.astype(np.float32), x.astype(np.float32), 8, 1e-4).numpy()
    assert np.abs(y32 - y64).max() < 3e-5
    np.testing.assert_allclose(box_filter(x.astype(np.float32), 8).numpy(), box_filter(x, 8).numpy(), atol=1e-5)


@pytest.mark.parametrize("eps", [1e-12, 1e-20, 1e-30])
def test_flat_guide_region_with_tiny_eps(rng, eps):
    """The variance guard. Where the guide is flat, var = f(I·I) − f(I)² and cov come out as round-off, positive or
    negative; a window with var <= 0 gets its exact a = 0. With the former clamp a = cov / (max(var, 0) + eps) a
    negative var gave a = round-off / eps: errors of 1e-4 at eps = 1e-12 and 1e4 at 1e-20 in this flat region.
    """
    img = rng.random((1, 64, 64, 1)).astype(np.float32)
    img[:, :, :40] = 0.3  # flat on the left, noise on the right
    x = rng.random((1, 64, 64, 1)).astype(np.float32)
    r = 4
    for p, expected in [(img, np.full_like(img, 0.3)),  # filtered by itself: stays 0.3 in the flat region
                        (x, box_filter(box_filter(x, r), r).numpy())]:  # a = 0, b = f(x): y = f(f(x))
        y, g_guide, g_x = vjp(lambda g, v: guided_filter(g, v, r, eps), img, p, np.ones_like(p))
        assert np.isfinite(y).all() and np.isfinite(g_guide).all() and np.isfinite(g_x).all()
        inner = (slice(None), slice(None), slice(0, 40 - 2 * r))  # windows of windows all in the flat region
        np.testing.assert_allclose(y[inner], expected[inner], rtol=0, atol=1e-5)
        np.testing.assert_allclose(y, guided_filter(img.astype(np.float64), p.astype(np.float64), r, eps).numpy(),
                                   rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------- graph, saving
def test_without_xla_gives_the_same_values_and_gradients(rng):
    guide, x = smooth_image(rng, 2, 19, 21, 3), rng.random((2, 19, 21, 2))
    dy = rng.standard_normal(x.shape)
    for got, want in zip(vjp(lambda g, v: guided_filter(g, v, 5, 1e-3, jit_compile=False), guide, x, dy),
                         vjp(lambda g, v: guided_filter(g, v, 5, 1e-3), guide, x, dy)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(box_filter(x, 4, jit_compile=False).numpy(), naive_box(x, 4), atol=1e-12)


def test_tf_function_and_saved_model_round_trip(rng, tmp_path):
    guide, x = smooth_image(rng, 2, 24, 20, 3).astype(np.float32), rng.random((2, 24, 20, 2)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    module = tf.Module()
    module.gf = GuidedFilter(radius=5, eps=1e-3)
    module.__call__ = tf.function(module.gf.__call__, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([None, None, None, 2], tf.float32)])
    eager = vjp(lambda g, v: module.gf(g, v), guide, x, dy)
    for fn in (module.__call__, tf.function(lambda g, v: guided_filter(g, v, 5, 1e-3))):
        for got, want in zip(vjp(fn, guide, x, dy), eager):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    tf.saved_model.save(module, str(tmp_path / "gf"))
    loaded = tf.saved_model.load(str(tmp_path / "gf"))
    for got, want in zip(vjp(loaded, guide, x, dy), eager):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_keras_functional_model_and_config_round_trip(rng):
    layer = GuidedFilter(radius=4, eps=1e-3, jit_compile=False, name="gf")
    config = layer.get_config()
    assert config["radius"] == 4 and config["eps"] == 1e-3 and config["jit_compile"] is False
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, GuidedFilter) and clone.get_config() == config
    guide_in, x_in = keras.Input((None, None, 3)), keras.Input((None, None, 1))
    model = keras.Model([guide_in, x_in], clone(guide_in, x_in))
    guide, x = rng.random((2, 16, 12, 3)).astype(np.float32), rng.random((2, 16, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(model([guide, x]).numpy(), layer(guide, x).numpy(), atol=1e-6)


@pytest.mark.parametrize("guide_shape, x_shape, kwargs, match", [
    ((8, 8, 1), (1, 8, 8, 1), {}, "guide must be a 4-D"),
    ((1, 8, 8, 2), (1, 8, 8, 1), {}, "1 or 3 channels"),
    ((1, 8, 8, 1), (1, 8, 9, 1), {}, "same width"),
    ((1, 8, 8, 1), (1, 7, 8, 1), {}, "same height"),
    ((2, 8, 8, 1), (1, 8, 8, 1), {}, "same batch size"),
    ((1, 8, 8, 1), (1, 8, 8, 1), {"radius": -1}, "radius"),
    ((1, 8, 8, 1), (1, 8, 8, 1), {"radius": 2.5}, "radius"),
    ((1, 8, 8, 1), (1, 8, 8, 1), {"eps": 0.0}, "eps"),
])
def test_bad_inputs_raise_value_error(guide_shape, x_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        guided_filter(np.zeros(guide_shape, np.float32), np.zeros(x_shape, np.float32), **kwargs)


def test_bad_layer_arguments_and_box_filter_shapes():
    with pytest.raises(ValueError, match="radius"):
        GuidedFilter(radius=-3)
    with pytest.raises(ValueError, match="eps"):
        GuidedFilter(eps=-1.0)
    with pytest.raises(ValueError, match="x must be a 4-D"):
        box_filter(np.zeros((8, 8), np.float32), 2)


def test_custom_gradient_flag_switches_to_autodiff_of_the_same_forward(rng):
    """custom_gradient=False: identical forward, gradient by TF autodiff, equal to Algorithm 2's."""
    guide = tf.constant(rng.random((2, 20, 24, 3)))
    x = tf.constant(rng.random((2, 20, 24, 2)))
    dy = tf.constant(rng.standard_normal((2, 20, 24, 2)))
    grads, outs = [], []
    for flag in (True, False):
        layer = GuidedFilter(radius=3, eps=1e-3, custom_gradient=flag, dtype="float64")
        assert GuidedFilter.from_config(layer.get_config()).custom_gradient is flag
        with tf.GradientTape() as tape:
            tape.watch([guide, x])
            y = layer(guide, x)
        outs.append(y.numpy())
        grads.append([g.numpy() for g in tape.gradient(y, [guide, x], output_gradients=dy)])
    np.testing.assert_array_equal(outs[0], outs[1])
    for custom, auto in zip(*grads):
        np.testing.assert_allclose(custom, auto, rtol=1e-6, atol=1e-9)
