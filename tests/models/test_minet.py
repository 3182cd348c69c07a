"""MINet (the paper's network) and MINetOfficial (the released one): both build and run on any size, the Table-2
ablations, serialisation, checkpoints, a falling training loss, the registry entries."""
import types

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


@pytest.mark.parametrize("options", [{}, {"block": "resblock-T"}, {"recompute": True}])
def test_paper_configuration_and_ablations_run(hazy, options):
    """Shapes only; what each ablation computes: test_each_ablation_removes_exactly_the_part_it_names."""
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


def _conv(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def _minet_parameters(f=64, reduction=16, attention="rca", fusion="mlf"):
    """MINet's weights by hand from the paper's description (Fig. 2, eqs. 6-9): bias-free convolutions before
    instance norm (gamma, beta per channel), one shared MLE block f per level whatever T."""
    norm = 2 * f
    encoder = _conv(3, 3, f, False) + norm + _conv(3, f, f, False) + norm
    levels = 3 * 2 * (_conv(3, f, f, False) + norm)
    fuse = {"mlf": _conv(3, 3 * f, 3), "concat": _conv(1, 3 * f, f), None: 0}[fusion]     # eq. 6: 3C -> 3 maps
    hidden = max(f // reduction, 1)
    refine = {"rca": _conv(1, f, f) + f * hidden + hidden + hidden * f + f,               # eq. 8: 1x1 conv + MLP
              "ca": f * hidden + hidden + hidden * f + f, None: 0}[attention]
    decoder = 4 * 4 * f * f + norm + _conv(3, f, 3)
    return encoder + levels + fuse + refine + decoder


def test_paper_configuration_parameter_count():
    """The paper's network (64 filters, T = 12, dilations 1, 2, 5, MLF, RCA with reduction 16) has the weights the
    paper's description gives, counted by hand: 338,122."""
    model = MINet()
    model(tf.zeros([1, 16, 16, 3]))
    assert _minet_parameters() == 338_122
    assert model.count_params() == 338_122
    assert model.refine.count_params() == _minet_parameters() - _minet_parameters(attention=None) == 4_740
    assert model.fuse.count_params() == _minet_parameters() - _minet_parameters(fusion=None) == 5_187


def _by_hand(model, x, fusion="mlf", attention="rca"):
    """MINet's forward from ``model``'s sub-layers, with the named parts (Table 2 ablations) left out."""
    x1 = model.level1(model.encoder(x))
    x2 = model.level2(x1)
    x3 = model.level3(x2)
    fused = {"mlf": lambda: model.fuse([x1, x2, x3]), "concat": lambda: model.fuse(tf.concat([x1, x2, x3], -1)),
             None: lambda: x3}[fusion]()
    if attention is not None:
        fused = model.refine(fused)
    return (x + model.decoder(fused)).numpy()


@pytest.mark.parametrize("options", [{"attention": None}, {"attention": "ca"}, {"fusion": None},
                                     {"fusion": "concat"}, {"block": "resblock-1"}])
def test_each_ablation_removes_exactly_the_part_it_names(hazy, options):
    """Table 2: an ablation changes only the part it names. Its weights differ from the paper's network by exactly
    that part's count, and with the shared parts' weights copied over, it computes the paper's forward with that
    part left out (or replaced), which differs from the full network's output.

    The attention MLPs get hidden units that are alive and output weights that differ by channel: with every ReLU
    hidden unit dead (as some random initialisations give) each channel gets the same weight, a uniform scale that
    the decoder's instance norm undoes, so removing the attention would change nothing."""
    full, ablated = MINet(**TINY), MINet(**{**TINY, **options})
    full(hazy)
    ablated(hazy)
    rng = np.random.default_rng(0)
    for model in (full, ablated):
        if getattr(model, "refine", None) is not None:
            mlp = model.refine
            mlp.dense1.kernel.assign(tf.zeros_like(mlp.dense1.kernel))
            mlp.dense1.bias.assign(tf.ones_like(mlp.dense1.bias))
            mlp.dense2.kernel.assign(rng.normal(size=mlp.dense2.kernel.shape).astype(np.float32))
    expected_full = full(hazy)["dehazed"].numpy()
    f = TINY["filters"]
    attention, fusion = options.get("attention", "rca"), options.get("fusion", "mlf")
    assert ablated.count_params() - full.count_params() == (
        _minet_parameters(f, TINY["reduction"], attention, fusion) - _minet_parameters(f, TINY["reduction"]))
    for name in ("encoder", "level1", "level2", "level3", "fuse", "refine", "decoder"):
        mine, theirs = getattr(ablated, name, None), getattr(full, name)
        if type(mine) is type(theirs):
            mine.set_weights(theirs.get_weights())
    got = ablated(hazy)["dehazed"].numpy()
    assert np.abs(got - expected_full).max() > 1e-3                   # the part mattered
    if options.get("block") == "resblock-1":                          # one residual step per level, same weights
        assert ablated.count_params() == full.count_params() and ablated.level1.steps == 1
        e = full.encoder(hazy)
        x1 = e + full.level1.f(e)
        x2 = x1 + full.level2.f(x1)
        x3 = x2 + full.level3.f(x2)
        expected = (hazy + full.decoder(full.refine(full.fuse([x1, x2, x3])))).numpy()
    else:                                                             # the full network's layers, the named part
        parts = types.SimpleNamespace(                                # left out or the ablation's replacement
            **{name: getattr(full, name) for name in ("encoder", "level1", "level2", "level3", "decoder")},
            fuse=getattr(ablated, "fuse", None), refine=getattr(ablated, "refine", None))
        expected = _by_hand(parts, hazy, fusion, attention)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_by_hand(full, hazy), expected_full, rtol=1e-5, atol=1e-5)


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


@pytest.fixture(scope="module")
def train_tiny_minet():
    """``run(seed, steps) -> losses``: Adam on one tiny MINet (recompute=True) traced once; each run starts from the
    initial weights and data of its seed and the optimizer's initial state (tracing costs ~10x the 40 steps)."""
    model = MINet(**TINY, recompute=True)
    model(tf.zeros([2, 32, 32, 3]))
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    initial_state = [v.numpy() for v in optimizer.variables]

    @tf.function
    def step(hazy, clear):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(model(hazy, training=True)["dehazed"] - clear))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    def run(seed, steps):
        keras.utils.set_random_seed(seed)
        fresh = MINet(**TINY)
        fresh(tf.zeros([2, 32, 32, 3]))
        model.set_weights(fresh.get_weights())
        for variable, value in zip(optimizer.variables, initial_state, strict=True):
            variable.assign(value)
        clear = np.random.default_rng(seed).uniform(size=(2, 32, 32, 3)).astype(np.float32)
        hazy = 0.6 * clear + 0.4 * 0.9                                # uniform haze, t = 0.6, A = 0.9
        return [float(step(tf.constant(hazy), tf.constant(clear))) for _ in range(steps)]

    return run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_lowers_the_loss(train_tiny_minet, seed):
    """Over three seeds (data and initial weights): 40 Adam steps take the L1 below 0.6 of its start (measured over
    seeds 0-4: 0.20-0.28)."""
    losses = train_tiny_minet(seed, 40)
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
