import subprocess

import keras
import numpy as np
import pytest

from tfdehaze.models import GuidedPix2Pix, registry
from tfdehaze.registry import LOSSES, MODELS, STEPS, Registry


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))


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


class Toy(keras.Model):
    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units)

    def call(self, x, training=None):
        return self.dense(x)


TOY_PRESET = {"description": "toy", "weights": "toy.weights.h5", "source": "make it with toy.save_weights",
              "score": "none"}


def test_load_preset_loads_its_weights_file(scratch_registry, rng, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDEHAZE_HOME", str(tmp_path))
    reference = Toy()
    x = rng.normal(size=(1, 32, 32, 3)).astype(np.float32)
    reference(x)
    registry.register_presets({"toy-released": TOY_PRESET}, Toy)
    assert "toy-released" in registry.names() and registry.describe()["toy-released"] == "toy"
    assert registry.presets()["toy-released"]["exists"] is False
    with pytest.raises(FileNotFoundError, match="toy.weights.h5.*make it with toy.save_weights"):
        registry.load("toy-released")
    reference.save_weights(str(registry.weights_path("toy-released")))
    np.testing.assert_array_equal(registry.load("toy-released")(x).numpy(), reference(x).numpy())
    assert registry.presets()["toy-released"]["exists"] is True
    with pytest.raises(ValueError, match="lacks \\['score'\\]"):
        registry.register("bad", Toy, preset={k: v for k, v in TOY_PRESET.items() if k != "score"})


def test_list_models_prints_every_name_and_the_presets(tmp_path):
    """The installed console script lists the registry, including the released-weights metadata."""
    result = subprocess.run(["tfdehaze-dehaze", "--list-models"], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "TFDEHAZE_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    for name in registry.names():
        assert name in result.stdout
    assert "minet_official_its.weights.h5 (missing)" in result.stdout
    assert "convert_minet.py" in result.stdout and "38.2 dB" in result.stdout
    assert "Traceback" not in result.stderr


def test_one_registry_class_for_models_losses_and_steps():
    assert all(isinstance(r, Registry) for r in (MODELS, LOSSES, STEPS))
    import tfdehaze.train.steps  # noqa: F401  registers the step kinds
    assert {"supervised", "gan", "distill"} <= set(STEPS.names())
    assert {"l1", "mse", "gan"} <= set(LOSSES.names())
    with pytest.raises(ValueError, match="unknown step kind 'rl'; registered step kinds: .*supervised"):
        STEPS.get("rl")


def test_load_name_without_weights_warns():
    with pytest.warns(UserWarning, match="no released weights"):
        model = registry.load("guided-pix2pix", depth=5, base_filters=8)
    assert isinstance(model, GuidedPix2Pix) and model.g0.depth == 5


def test_register_refuses_duplicates_unless_replace(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        registry.register("guided-pix2pix", GuidedPix2Pix)
    registry.register("guided-pix2pix", lambda: "replaced", "", replace=True)
    assert registry.build("guided-pix2pix") == "replaced"
