import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze import physics
from tfdehaze.layers.guided_filter import GuidedFilter
from tfdehaze.layers.images import pad_to_multiple
from tfdehaze.layers.normalization import InstanceNormalization
from tfdehaze.models.guided_pix2pix import GuidedPix2Pix, PatchDiscriminator, Pix2PixUNet

SMALL = dict(depth=5, base_filters=8, radius=4)


@pytest.fixture
def hazy(rng):
    return rng.uniform(0.05, 0.95, size=(2, 64, 64, 3)).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_ranges_on_odd_size(rng, channels):
    x = rng.uniform(size=(2, 100, 76, 3)).astype(np.float32)
    model = GuidedPix2Pix(out_channels=channels, t_min=0.1, **SMALL)
    out = model(x, training=False)
    assert out["dehazed"].shape == out["coarse_dehazed"].shape == (2, 100, 76, 3)
    assert out["transmission"].shape == out["coarse_transmission"].shape == (2, 100, 76, channels)
    assert out["airlight"].shape == (2, 1, 1, 3)
    t, t0 = out["transmission"].numpy(), out["coarse_transmission"].numpy()
    assert t.min() >= 0.1 and t.max() <= 1.0
    assert t0.min() > 0.0 and t0.max() < 1.0
    for value in out.values():
        assert np.isfinite(value.numpy()).all()


@pytest.mark.parametrize("size,pads", [((5, 7), (3, 4)), ((5, 7), (20, 13)), ((1, 4), (2, 3))])
def test_reflect_padding_matches_numpy_and_crops_back(rng, size, pads):
    # np.pad's "reflect" keeps reflecting when the pad exceeds the size; tf.pad's REFLECT refuses.
    x = rng.uniform(size=(1, *size, 2)).astype(np.float32)
    multiple = max(size) + max(pads)
    padded, crop = pad_to_multiple(x, multiple)
    ph, pw = (-size[0]) % multiple, (-size[1]) % multiple
    expected = np.pad(x, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)
    np.testing.assert_array_equal(crop(padded).numpy(), x)


def test_default_is_the_authors_512_network():
    unet = Pix2PixUNet()
    unet.build((None, None, None, 3))
    downs = [getattr(unet, f"down{i}") for i in range(1, 10)]
    ups = [getattr(unet, f"up{j}") for j in range(1, 9)]
    assert not hasattr(unet, "down10") and not hasattr(unet, "up9")

    enc = [64, 128, 256, 512, 512, 512, 512, 512, 512]
    dec = [512, 512, 512, 512, 512, 256, 128, 64]
    assert [b.layers[0].filters for b in downs] == enc
    assert all(b.layers[0].strides == (2, 2) and b.layers[0].kernel_size == (4, 4) for b in downs + ups)
    assert [b.layers[0].filters for b in ups] == dec
    assert [any(isinstance(l, InstanceNormalization) for l in b.layers) for b in downs] == [False] + [True] * 8
    assert [any(isinstance(l, keras.layers.Dropout) for l in b.layers) for b in ups] == [True] * 3 + [False] * 5
    assert downs[0].layers[-1].negative_slope == pytest.approx(0.3)
    shape = (1, 512, 512, 3)
    for block in downs:
        shape = block.compute_output_shape(shape)
    assert tuple(shape) == (1, 1, 1, 512)  # nine stride-2 downsamplings of 512

    k = 4 * 4
    expected = k * 3 * 64  # down1: conv without bias, no norm
    for c_in, c_out in zip(enc[:-1], enc[1:]):
        expected += k * c_in * c_out + 2 * c_out  # conv without bias + instance norm gamma, beta
    c_in = enc[-1]
    for c_out, skip in zip(dec, enc[-2::-1]):
        expected += k * c_in * c_out + 2 * c_out  # transposed conv without bias + instance norm
        c_in = c_out + skip  # concatenation with the encoder output of the same size
    expected += k * c_in * 1 + 1  # last transposed conv (bias) to one channel
    # = 3,072 + 23,724,032 + 6,912 (encoder) + 43,253,760 + 6,016 (decoder) + 2,049 (last) = 66,995,841
    assert c_in == 128 and expected == 66_995_841
    assert unet.count_params() == expected

    model = GuidedPix2Pix()  # the guided filter has no weights
    model.build((None, None, None, 3))
    assert model.count_params() == expected
    assert (model.guided_filter.radius, model.guided_filter.eps) == (60, 1e-4)


def test_three_channel_transmission_adds_only_two_output_maps(hazy):
    """The RICE variant (a transmission per colour) differs from the paper's network only in the last transposed
    convolution: 2 more output channels of 4 x 4 x (2 x base_filters) weights and a bias each; the guided filter
    and the scattering model add no weights, and the refined transmission keeps its 3 channels."""
    one, three = GuidedPix2Pix(**SMALL), GuidedPix2Pix(out_channels=3, **SMALL)
    for model in (one, three):
        model.build((None, None, None, 3))
    assert three.count_params() - one.count_params() == 2 * (4 * 4 * 2 * SMALL["base_filters"] + 1)
    assert one.count_params() == one.g0.count_params()
    t = three(hazy, training=False)["transmission"].numpy()
    assert t.shape == (2, 64, 64, 3) and np.abs(t[..., 0] - t[..., 1]).max() > 1e-4


def test_gradients_reach_g0_through_the_guided_filter(hazy, rng):
    clear = rng.uniform(size=hazy.shape).astype(np.float32)
    model = GuidedPix2Pix(**SMALL)
    model(hazy)
    with tf.GradientTape() as tape:
        out = model(hazy, training=False)
        loss = tf.reduce_mean(tf.abs(out["dehazed"] - clear))
    variables = model.g0.trainable_variables
    assert len(variables) == len(model.trainable_variables) > 0
    for variable, grad in zip(variables, tape.gradient(loss, variables)):
        assert grad is not None, variable.path
        assert np.isfinite(grad.numpy()).all(), variable.path
        assert np.abs(grad.numpy()).max() > 0, variable.path

    # The outputs are wired as eqs. (39)-(42): recompute each stage from the returned tensors.
    t0, t, a = out["coarse_transmission"], out["transmission"], out["airlight"]
    np.testing.assert_allclose(t0.numpy(), model.g0(hazy, training=False).numpy(), atol=1e-6)
    refined = GuidedFilter(radius=4, eps=1e-4)(tf.image.rgb_to_grayscale(hazy), t0)
    np.testing.assert_allclose(t.numpy(), np.clip(refined.numpy(), 0.05, 1.0), atol=1e-6)
    np.testing.assert_allclose(a.numpy(), physics.atmospheric_light(hazy, "brightest_luma").numpy())
    by_hand = (hazy - a.numpy()) / np.maximum(t.numpy(), 0.05) + a.numpy()
    np.testing.assert_allclose(out["dehazed"].numpy(), by_hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["dehazed"].numpy(), physics.dehaze(hazy, t, a, 0.05).numpy(), atol=1e-6)
    np.testing.assert_allclose(out["coarse_dehazed"].numpy(), physics.dehaze(hazy, t0, a, 0.05).numpy(), atol=1e-6)


def test_airlight_is_estimated_per_image(rng):
    x = rng.uniform(0.0, 0.4, size=(2, 64, 64, 3)).astype(np.float32)
    x[0, 10, 20] = (0.9, 0.8, 0.7)  # the brightest (luma) pixel of each image
    x[1, 50, 5] = (0.6, 0.95, 0.5)
    out = GuidedPix2Pix(**SMALL)(x, training=False)
    np.testing.assert_allclose(out["airlight"].numpy().reshape(2, 3), [[0.9, 0.8, 0.7], [0.6, 0.95, 0.5]])


def test_bad_input_and_arguments_raise_value_error():
    model = GuidedPix2Pix(**SMALL)
    with pytest.raises(ValueError, match="hazy"):
        model(np.zeros((1, 64, 64, 4), np.float32))
    with pytest.raises(ValueError, match="out_channels"):
        GuidedPix2Pix(out_channels=2)
    with pytest.raises(ValueError, match="airlight_method"):
        GuidedPix2Pix(airlight_method="brightest")
    with pytest.raises(ValueError, match="depth"):
        Pix2PixUNet(depth=0)


def test_patch_discriminator_shape_and_receptive_field(hazy):
    disc = PatchDiscriminator(base_filters=8, n_layers=2)
    logits = disc((hazy, hazy[::-1]))
    assert logits.shape == (2, 64 // 4 - 2, 64 // 4 - 2, 1)  # two stride-2 convs, two valid 4x4 stride-1 convs
    np.testing.assert_allclose(disc(np.concatenate([hazy, hazy[::-1]], -1)).numpy(), logits.numpy(), atol=1e-6)
    assert disc.receptive_field == 34 and PatchDiscriminator().receptive_field == 70


@pytest.mark.parametrize("n_layers,size", [(2, 64), (3, 128)])
def test_receptive_field_is_the_support_of_one_logit(rng, n_layers, size):
    # Without instance norm (whose image-wide statistics touch every pixel) one logit depends on exactly a
    # receptive_field x receptive_field patch of the input.
    disc = PatchDiscriminator(base_filters=8, n_layers=n_layers, norm="none")
    x = tf.constant(rng.uniform(size=(1, size, size, 6)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = disc(x)
        centre = logits.shape[1] // 2
        logit = logits[0, centre, centre, 0]
    support = np.abs(tape.gradient(logit, x).numpy()[0]).sum(-1) > 0
    rows, cols = np.flatnonzero(support.any(1)), np.flatnonzero(support.any(0))
    assert 0 < rows[0] and rows[-1] < size - 1 and 0 < cols[0] and cols[-1] < size - 1  # not cut by the border
    assert rows[-1] - rows[0] + 1 == cols[-1] - cols[0] + 1 == disc.receptive_field


def test_keras_saving_round_trip(tmp_path, hazy):
    model = GuidedPix2Pix(out_channels=3, leaky_slope=0.2, eps=1e-3, t_min=0.1, airlight_method="brightest_value",
                          **SMALL)
    disc = PatchDiscriminator(base_filters=8, n_layers=2, leaky_slope=0.2)
    for net, inputs in ((model, hazy), (disc, (hazy, hazy[::-1]))):
        before = net(inputs, training=False)
        path = tmp_path / f"{net.name}.keras"
        keras.saving.save_model(net, path)
        clone = keras.saving.load_model(path)
        assert type(clone) is type(net) and clone.get_config() == net.get_config()
        after = clone(inputs, training=False)
        for key, value in (before.items() if isinstance(before, dict) else [("logits", before)]):
            got = after[key] if isinstance(after, dict) else after
            np.testing.assert_array_equal(got.numpy(), value.numpy(), err_msg=key)


def _weights_differ(a, b):
    return any(not np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.weights, b.weights))


@pytest.mark.parametrize("make,inputs", [
    (lambda: GuidedPix2Pix(**SMALL), lambda x: x),
    (lambda: PatchDiscriminator(base_filters=8, n_layers=2), lambda x: (x, x)),
])
def test_tf_train_checkpoint_round_trip(tmp_path, hazy, make, inputs):
    source, target = make(), make()
    source(inputs(hazy))  # build by calling on a tensor
    target(inputs(hazy))
    assert _weights_differ(source, target)  # different random initialisations
    prefix = tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(prefix) if name.startswith("model/")]
    assert len(saved) == len(source.weights)  # no sub-layer was missed (SPEC: list-held layers are)
    tf.train.Checkpoint(model=target).restore(prefix).assert_existing_objects_matched()
    assert len(target.weights) == len(source.weights)
    for x, y in zip(source.weights, target.weights):
        np.testing.assert_array_equal(y.numpy(), x.numpy(), err_msg=x.path)


def test_graph_mode_equals_eager(hazy):
    """Inside tf.function, TF 2.21's oneDNN rewrites may fuse conv + bias (+ add) + LeakyReLU into one op with a
    fixed 0.2 slope (found with MI-Net's head); our LeakyReLU slope is 0.3, so any such fusion would show here."""
    generator, discriminator = GuidedPix2Pix(**SMALL), PatchDiscriminator(base_filters=8, n_layers=2)
    for model, args in ((generator, (hazy,)), (discriminator, ((hazy, hazy[::-1]),))):
        eager = tf.nest.map_structure(np.asarray, model(*args, training=False))
        graph = tf.nest.map_structure(np.asarray, tf.function(lambda *a, m=model: m(*a, training=False))(*args))
        tf.nest.map_structure(lambda e, g: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5), eager, graph)


def test_discriminator_refuses_images_too_small_for_its_logits(rng):
    disc = PatchDiscriminator(base_filters=8, n_layers=3)
    assert disc.min_size == 17
    assert disc(rng.uniform(size=(1, 17, 17, 6)).astype(np.float32)).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="16"):
        disc(rng.uniform(size=(1, 16, 16, 6)).astype(np.float32))
