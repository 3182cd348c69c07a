"""MINet (the paper's network) and MINetOfficial (the released one): both build and run on any size, the Table-2
ablations, serialisation, checkpoints, a falling training loss, the registry entries."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze import convert
from tfdehaze.layers.implicit import IMBlock
from tfdehaze.models import registry
from tfdehaze.models.minet import MINet, MINetOfficial

TINY = dict(filters=8, steps=2, reduction=4)


@pytest.fixture
def hazy(rng):
    return rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)


@pytest.mark.parametrize("options", [{}, {"block": "resblock-1"}, {"block": "resblock-T"}, {"attention": "ca"},
                                     {"attention": None}, {"fusion": "concat"}, {"fusion": None},
                                     {"recompute": True}])
def test_paper_configuration_and_ablations_run(hazy, options):
    model = MINet(**{**TINY, **options})
    out = model(hazy)
    assert set(out) == {"dehazed"} and out["dehazed"].shape == hazy.shape
    assert np.isfinite(out["dehazed"].numpy()).all()


def test_ablation_structure(hazy):
    counts = {}
    for block in ("im", "resblock-1", "resblock-T"):
        model = MINet(**{**TINY, "steps": 3, "block": block})
        model(hazy[:1])
        counts[block] = model.count_params()
    assert counts["im"] == counts["resblock-1"]                      # shared weights: T does not add parameters
    model = MINet(**TINY)
    model(hazy[:1])
    f_params = model.level1.f.count_params()
    assert counts["resblock-T"] - counts["im"] == 3 * 2 * f_params  # per level 3 unshared blocks instead of 1
    assert isinstance(model.level2, IMBlock) and (model.level2.steps, model.level2.f.dilation) == (2, 2)
    assert MINet().steps == 12 and MINet().dilations == (1, 2, 5)


def test_any_size_is_padded_and_cropped(rng):
    model = MINet(**TINY)
    for shape in [(1, 33, 47, 3), (1, 64, 65, 3)]:
        x = rng.uniform(size=shape).astype(np.float32)
        assert model(x)["dehazed"].shape == shape
    official = MINetOfficial(steps=1)
    assert official(rng.uniform(size=(1, 21, 30, 3)).astype(np.float32))["dehazed"].shape == (1, 21, 30, 3)


def test_official_network_has_the_released_size():
    model = MINetOfficial()
    model(tf.zeros([1, 32, 32, 3]))
    assert model.count_params() == 628_078 and len(model.weights) == 73
    assert (model.steps, model.eta, model.level2.f.smooth, model.level3.f.dilation) == (8, 1.0, True, 4)
    with pytest.raises(ValueError, match="official"):
        MINetOfficial(fusion=None)
    with pytest.raises(ValueError):
        MINet(config="official")


def test_bad_input_and_options_are_value_errors():
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        MINet(**TINY)(np.zeros((1, 32, 32, 4), np.float32))
    for bad in ({"config": "v2"}, {"config": "paper"}, {"block": "dense"}, {"attention": "spatial"}, {"fusion": "sum"},
                {"dilations": (1, 2)}):
        with pytest.raises(ValueError):
            MINet(**{**TINY, **bad})


def test_keras_saving_round_trip(tmp_path, hazy):
    model = MINet(**TINY, block="resblock-T", attention="ca", recompute=True)
    expected = model(hazy)["dehazed"].numpy()
    path = tmp_path / "minet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MINet) and loaded.get_config() == model.get_config()
    legacy = MINet.from_config({**model.get_config(), "config": "paper"})    # .keras files from before the split
    assert legacy.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(hazy)["dehazed"].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("cls, kwargs", [(MINet, TINY), (MINetOfficial, {"steps": 1})])
def test_checkpoint_round_trip_restores_identical_weights(tmp_path, hazy, cls, kwargs):
    model = cls(**kwargs)
    model(hazy)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    fresh = cls(**kwargs)
    fresh(hazy)
    assert any(not np.array_equal(a, b) for a, b in zip(fresh.get_weights(), model.get_weights(), strict=True))
    tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
    assert len(fresh.weights) == len(model.weights)
    for a, b in zip(fresh.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(fresh(hazy)["dehazed"].numpy(), model(hazy)["dehazed"].numpy())


def test_training_lowers_the_loss(rng):
    clear = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    hazy = 0.6 * clear + 0.4 * 0.9                                    # uniform haze, t = 0.6, A = 0.9
    model = MINet(**TINY, recompute=True)
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(model(hazy, training=True)["dehazed"] - clear))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    losses = [float(step()) for _ in range(40)]
    assert losses[-1] < 0.6 * losses[0], losses


def test_registry_entries(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDEHAZE_HOME", str(tmp_path))
    assert {"minet", "minet-official"} <= set(registry.names())
    paper = registry.build("minet", filters=8)
    assert type(paper) is MINet and paper.steps == 12 and paper.filters == 8
    official = registry.build("minet-official")
    assert type(official) is MINetOfficial and official.steps == 8
    assert registry.weights_path("minet-official") == tmp_path / "weights" / "minet_official_its.weights.h5"
    with pytest.raises(FileNotFoundError, match="convert_minet.py"):
        registry.load("minet-official", steps=1)
    with pytest.raises(ValueError, match="MINetOfficial"):         # the released weights fit only MINetOfficial
        convert.minet_official_targets(MINet(**TINY))


@pytest.mark.parametrize("height, width", [(1, 7), (33, 20), (9, 1)])
def test_any_size_comes_back_the_same_size(rng, height, width):
    """Reflect padding to the stride works even for 1-pixel-thin images (tf.pad's REFLECT would refuse them)."""
    x = rng.uniform(size=(1, height, width, 3)).astype(np.float32)
    out = MINet(**TINY)(x)["dehazed"]
    assert out.shape == (1, height, width, 3) and np.isfinite(out.numpy()).all()
