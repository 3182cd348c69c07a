import keras
import numpy as np
import pytest

from tfdehaze.models import GuidedPix2Pix, registry


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))


def test_builtin_names_and_defaults():
    assert {"guided-pix2pix", "guided-pix2pix-rice"} <= set(registry.names())
    paper, rice = registry.build("guided-pix2pix"), registry.build("guided-pix2pix-rice")
    assert isinstance(paper, GuidedPix2Pix) and isinstance(rice, GuidedPix2Pix)
    assert (paper.g0.depth, paper.g0.out_channels, paper.g0.base_filters, paper.radius) == (9, 1, 64, 60)
    assert rice.g0.out_channels == 3
    assert all(registry.describe()[name] for name in ("guided-pix2pix", "guided-pix2pix-rice"))


def test_build_with_overrides(rng):
    model = registry.build("guided-pix2pix-rice", depth=5, base_filters=8, radius=3, t_min=0.1)
    got = (model.g0.depth, model.g0.base_filters, model.g0.out_channels, model.radius, model.t_min)
    assert got == (5, 8, 3, 3, 0.1)
    out = model(rng.uniform(size=(1, 64, 64, 3)).astype(np.float32), training=False)
    assert out["transmission"].shape == (1, 64, 64, 3)
    assert registry.build("guided-pix2pix-rice", out_channels=1).g0.out_channels == 1


def test_unknown_name_lists_the_registered_names():
    with pytest.raises(ValueError, match="unknown model 'pix2pix'") as info:
        registry.build("pix2pix")
    assert all(name in str(info.value) for name in registry.names())
    with pytest.raises(ValueError, match="guided-pix2pix-rice"):
        registry.load("nonsense")


def test_bad_override_is_a_value_error():
    with pytest.raises(ValueError, match="guided-pix2pix.*radiuss"):
        registry.build("guided-pix2pix", radiuss=3)
    with pytest.raises(ValueError, match="guided-pix2pix-rice.*out_channels must be 1 or 3"):
        registry.build("guided-pix2pix-rice", out_channels=2)


def test_load_keras_file(tmp_path, rng):
    x = rng.uniform(size=(1, 64, 48, 3)).astype(np.float32)
    model = registry.build("guided-pix2pix", depth=5, base_filters=8, radius=4)
    expected = model(x, training=False)["dehazed"].numpy()
    path = tmp_path / "gp2p.keras"
    keras.saving.save_model(model, path)
    for name_or_path in (path, str(path)):
        loaded = registry.load(name_or_path)
        assert isinstance(loaded, GuidedPix2Pix)
        np.testing.assert_array_equal(loaded(x, training=False)["dehazed"].numpy(), expected)
    with pytest.raises(ValueError, match="missing.keras"):
        registry.load(tmp_path / "missing.keras")


def test_load_name_applies_the_weights_hook(scratch_registry, rng):
    reference = keras.Sequential([keras.layers.Dense(2)])
    reference.build((None, 3))

    def weights(model):
        model.build((None, 3))
        model.set_weights(reference.get_weights())

    registry.register("toy-released", lambda units=2: keras.Sequential([keras.layers.Dense(units)]), "toy",
                      weights=weights)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(registry.load("toy-released")(x).numpy(), reference(x).numpy())
    assert "toy-released" in registry.names()


def test_load_name_without_weights_warns():
    with pytest.warns(UserWarning, match="no released weights"):
        model = registry.load("guided-pix2pix", depth=5, base_filters=8)
    assert isinstance(model, GuidedPix2Pix) and model.g0.depth == 5


def test_register_refuses_duplicates_unless_replace(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        registry.register("guided-pix2pix", GuidedPix2Pix)
    registry.register("guided-pix2pix", lambda: "replaced", replace=True)
    assert registry.build("guided-pix2pix") == "replaced"
