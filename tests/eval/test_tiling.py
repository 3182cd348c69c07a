"""Tiled inference (tfdehaze.inference.dehaze_tiled / make_dehazer(tile=...)): equal to whole-image inference for a
fully convolutional model; a global airlight is estimated once and passed to every tile."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze import inference, physics
from tfdehaze.models.guided_pix2pix import GuidedPix2Pix
from tfdehaze.models.kddn import KDDNTeacher


def _image(h, w, seed=0):
    return tf.random.stateless_uniform([1, h, w, 3], seed=[seed, 1])


def _conv_stack():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None, None, 3)),
                             keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                             keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                             keras.layers.Conv2D(3, 3, padding="same")])


@pytest.mark.parametrize("shape", [(96, 96), (97, 101)])
def test_fully_convolutional_tiled_equals_whole(shape):
    model = _conv_stack()                      # receptive radius 3 <= margin = overlap // 4 = 4
    hazy = _image(*shape)
    whole = model(hazy).numpy()
    calls = []

    def fn(tile):
        calls.append(tuple(tile.shape[1:3]))
        return model(tile)

    tiled = inference.dehaze_tiled(fn, hazy, tile=32, overlap=16)["dehazed"].numpy()
    assert len(calls) >= 9 and max(calls) <= (32, 32)        # 3x the tile: at least 3 x 3 tiles, none larger
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    via_dehazer = inference.make_dehazer(model=model, tile=32, overlap=16)(hazy)["dehazed"].numpy()
    np.testing.assert_allclose(via_dehazer, whole, atol=1e-4)


def test_strided_model_tiles_on_its_stride_grid():
    keras.utils.set_random_seed(1)
    model = KDDNTeacher(filters=4, res_blocks=1, feature_taps=(1,))   # stride 4, no global statistics
    assert model.global_statistics == () and model.tile_multiple == 4
    hazy = _image(150, 142, seed=2)
    whole = model(hazy, training=False)["dehazed"].numpy()
    tiled = inference.make_dehazer(model=model, tile=64, overlap=48, margin=20)(hazy)["dehazed"].numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def test_dcp_airlight_estimated_once_and_passed():
    hazy = _image(60, 60, seed=3).numpy() * 0.6
    hazy[0, 50:55, 50:55] = 0.95                   # the airlight lies in one corner tile only
    whole = physics.dcp_dehaze(hazy, patch=3, radius=2)

    def fn(tile, airlight=None):
        return physics.dcp_dehaze(tile, patch=3, radius=2, airlight=airlight)

    global_a = physics.atmospheric_light(hazy, "dark_channel", patch=3)
    tiled = inference.dehaze_tiled(fn, hazy, tile=24, overlap=16, margin=6, airlight=global_a)
    np.testing.assert_allclose(tiled["airlight"], whole["airlight"], atol=1e-6)
    np.testing.assert_allclose(tiled["dehazed"], whole["dehazed"], atol=1e-4)
    # without the global airlight each tile estimates its own and the result differs
    own = inference.dehaze_tiled(lambda t: physics.dcp_dehaze(t, patch=3, radius=2), hazy, tile=24, overlap=16,
                                 margin=6)
    assert float(np.abs(own["dehazed"] - whole["dehazed"]).max()) > 0.05


def test_guided_pix2pix_gets_the_global_airlight():
    keras.utils.set_random_seed(2)
    model = GuidedPix2Pix(depth=3, base_filters=4, radius=2, eps=1e-2)
    assert "airlight" in model.global_statistics and model.tile_multiple == 8
    hazy = _image(48, 48, seed=4).numpy() * 0.5
    hazy[0, 40, 44] = [0.97, 0.96, 0.95]
    global_a = model.estimate_airlight(hazy)
    seen = []

    def fn(tile, airlight=None):
        seen.append(np.asarray(airlight))
        per_tile = model.estimate_airlight(tile)
        seen.append(np.asarray(per_tile))
        return model(tile, training=False, airlight=airlight)

    out = inference.dehaze_tiled(fn, hazy, tile=16, overlap=8, multiple=8, airlight=global_a)
    given, own = seen[0::2], seen[1::2]
    assert len(given) == 25 and all(np.array_equal(a, global_a) for a in given)
    assert any(not np.allclose(a, global_a) for a in own)     # tiles alone would estimate another airlight
    np.testing.assert_array_equal(out["airlight"], global_a)
    via_dehazer = inference.make_dehazer(model=model, tile=16, overlap=8)(tf.constant(hazy))
    np.testing.assert_array_equal(via_dehazer["airlight"], global_a)
    # the call argument itself: the given A is used in eq. (42)
    fixed = model(hazy, airlight=tf.fill([1, 1, 1, 3], 0.8))
    np.testing.assert_allclose(physics.dehaze(hazy, fixed["transmission"], 0.8, model.t_min), fixed["dehazed"],
                               atol=1e-5)


def test_tile_arguments_checked():
    with pytest.raises(ValueError, match="overlap"):
        inference.dehaze_tiled(lambda t: t, _image(8, 8), tile=4, overlap=2, margin=1)
