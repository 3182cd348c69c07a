"""Mixed precision (`tfdehaze.precision`): every recipe trains and infers under ``mixed_bfloat16`` and
``mixed_float16`` with float32 at the model boundary; loss scaling under float16; checkpoints cross precisions;
the released MI-Net weights keep their score under bfloat16."""
import numpy as np
import pytest
import tensorflow as tf
from test_registered import TINY

import tfdehaze.models  # noqa: F401  (registers every model)
from tfdehaze import precision
from tfdehaze.losses.perceptual import tiny_vgg
from tfdehaze.registry import MODELS, STEPS
from tfdehaze.train import recipes
from tfdehaze.train.steps import DistillationStep

POLICIES = ("mixed_bfloat16", "mixed_float16")
SMALLER = {"guided-pix2pix": {"depth": 4, "base_filters": 4, "radius": 2}}   # float16 is slow on CPUs


def _tiny(name, default_taps=False):
    kwargs = SMALLER.get(name, TINY[name][0])
    if default_taps:   # RFD's teacher and student: the recipe's pooling options fit the models' default taps
        kwargs = {k: v for k, v in kwargs.items() if k != "feature_taps"}
    return MODELS.get(name).build(**kwargs)


def _step(recipe_name):
    """The recipe's step kind and loss terms around tiny models (a tiny VGG for the perceptual term)."""
    recipe = recipes.get_recipe(recipe_name)
    losses = [dict(term, network=tiny_vgg()) if term["type"] == "perceptual" else term for term in recipe.losses]
    model = _tiny(recipe.model, default_taps=recipe.model == "rfd")
    if recipe.step == "distill":
        teacher_name = {"kddn": "kddn-teacher", "rfd": "rfd-teacher"}[recipe.model]
        options = {k: v for k, v in recipe.step_options.items() if k != "teacher"}
        teacher = _tiny(teacher_name, default_taps=recipe.model == "rfd")
        step = DistillationStep(model, teacher, recipes.build_optimizer(recipe, 10), losses, **options)
    else:
        step = STEPS.get(recipe.step).obj.from_recipe(recipe, model, 10)
    return recipe, model, step


def _batch(recipe, seed=0):
    size = 32
    clear = tf.random.stateless_uniform([2, size, size, 3], seed=[seed, 1])
    return {"hazy": 0.6 * clear + 0.3, "clear": clear, "transmission": tf.fill([2, size, size, 1], 0.6)}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", recipes.names())
def test_every_recipe_trains_and_infers_under_mixed_policy(name, policy):
    with precision.policy(policy):
        recipe, model, step = _step(name)
        batch = _batch(recipe)
        step.build(tf.distribute.get_strategy(), batch, 2)
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, tf.keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == policy.removeprefix("mixed_") for layer in convs)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert bool(step._scalers) == (policy == "mixed_float16")        # loss scaling only for float16
    before = [v.numpy().copy() for v in model.trainable_variables]
    # float16 starts at a loss scale of 2**15: steps whose scaled gradients overflow are skipped (scale halved)
    # until the scale fits, so a few more steps may pass before the weights move.
    for i in range(3 if policy == "mixed_bfloat16" else 8):
        logs = {k: float(v) for k, v in step(_batch(recipe, seed=i)).items()}
        assert all(np.isfinite(v) for v in logs.values()), logs
        moved = max(float(np.abs(v.numpy() - b).max()) for v, b in zip(model.trainable_variables, before))
        if i >= 2 and moved > 0:
            break
    assert moved > 0, f"{i + 1} steps left every weight unchanged"
    out = step.predict(batch)
    assert out.dtype == tf.float32 and bool(tf.reduce_all(tf.math.is_finite(out)))


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_model_built_under_a_policy_keeps_it_when_first_called_outside(name):
    """Sub-layers that a layer creates in ``build`` (at the first call) take the layer's policy, not the global one
    of that moment: a model made inside ``precision.policy`` and called after it computes in bfloat16 throughout
    (before, MI-Net, KDDN and RFD failed on a bfloat16 tensor meeting a float32 convolution)."""
    if name not in MODELS.names():
        pytest.skip(f"{name} is not registered")
    with precision.policy("mixed_bfloat16"):
        model = _tiny(name)
    _, shape, *_ = TINY[name]
    out = model(tf.random.stateless_uniform([1, *shape[1:]], seed=[0, 1]))
    assert all(t.dtype == tf.float32 for t in tf.nest.flatten(out))
    computing = {layer.dtype_policy.name for layer in model._flatten_layers(include_self=False)
                 if layer.weights and type(layer).__name__ != "GuidedFilter"}
    assert computing == {"mixed_bfloat16"}, computing


def test_float16_loss_scale_skips_a_non_finite_step_and_recovers():
    with precision.policy("mixed_float16"):
        recipe, model, step = _step("minet")
        batch = _batch(recipe)
        step.build(tf.distribute.get_strategy(), batch, 2)
    scaler = step._scalers[id(step.optimizer)]
    scaler.dynamic_scale.assign(2.0 ** 40)            # overflows float16 gradients: the update must be skipped
    before = [v.numpy().copy() for v in model.trainable_variables]
    step(batch)
    assert float(scaler.dynamic_scale) == 2.0 ** 39
    assert all(np.array_equal(v.numpy(), b) for v, b in zip(model.trainable_variables, before))
    scaler.dynamic_scale.assign(2.0 ** 10)
    step(batch)                                      # a scale that fits: the update is applied
    assert float(scaler.dynamic_scale) == 2.0 ** 10
    assert any(not np.array_equal(v.numpy(), b) for v, b in zip(model.trainable_variables, before))


@pytest.mark.parametrize("first, second", [("mixed_float16", "float32"), ("float32", "mixed_bfloat16"),
                                           ("mixed_bfloat16", "mixed_float16")])
def test_checkpoint_written_in_one_precision_restores_in_another(tmp_path, first, second):
    steps = {}
    for policy in (first, second):
        tf.keras.utils.set_random_seed(len(steps))       # different initial weights
        with precision.policy(policy):
            recipe, model, step = _step("guided-pix2pix")
            step.build(tf.distribute.get_strategy(), _batch(recipe), 2)
        steps[policy] = step
    steps[first](_batch(recipe))
    path = tf.train.Checkpoint(**steps[first].checkpoint_objects()).save(str(tmp_path / "ckpt"))
    status = tf.train.Checkpoint(**steps[second].checkpoint_objects()).restore(path)
    status.assert_existing_objects_matched()
    for name in ("model", "discriminator", "optimizer", "discriminator_optimizer"):
        saved, restored = steps[first].checkpoint_objects()[name], steps[second].checkpoint_objects()[name]
        assert len(saved.variables) == len(restored.variables) > 0
        for a, b in zip(saved.variables, restored.variables):
            if "seed_generator" in a.path:           # dropout's RNG state, not a weight
                continue
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{name}/{a.path}")
    steps[second](_batch(recipe))                     # and training goes on


def test_policy_names_and_auto(monkeypatch):
    monkeypatch.setenv(precision.ENV, "mixed_float16")
    assert precision.resolve("auto") == ("mixed_float16", f"{precision.ENV}=mixed_float16")
    monkeypatch.setenv(precision.ENV, "fp8")
    with pytest.raises(ValueError, match="TFDEHAZE_PRECISION='fp8' is not a precision"):
        precision.resolve(None)
    monkeypatch.delenv(precision.ENV)
    policy, reason = precision.resolve("auto")
    assert policy in precision.POLICIES and reason


def test_minet_official_under_bfloat16_scores_within_0_3_db_of_float32(reference_dir, capsys):
    from tfdehaze import convert
    from tfdehaze.data import io as image_io
    from tfdehaze.models.minet import MINetOfficial
    pth = reference_dir / "minet_official_its.pth"
    root = reference_dir / "sots_indoor_sample"
    pairs = [(h, root / "clear" / f"{h.stem.split('_')[0]}.png") for h in sorted((root / "hazy").glob("*.png"))]
    if not pth.is_file() or not pairs:
        pytest.skip(f"the MI-Net checkpoint and SOTS pairs are not in {reference_dir}")
    state = convert.minet_official_state(pth)
    scores = {}
    for policy in ("float32", "mixed_bfloat16"):
        with precision.policy(policy):
            model = convert.load_minet_official_state(MINetOfficial(), state)
        dehaze = tf.function(lambda x, model=model: model(x)["dehazed"])
        psnr = []
        for hazy_path, clear_path in pairs:
            hazy, clear = image_io.read_image(hazy_path), image_io.read_image(clear_path)
            psnr.append(float(tf.image.psnr(np.clip(dehaze(hazy[None]).numpy()[0], 0, 1), clear, 1.0)))
        scores[policy] = float(np.mean(psnr))
    with capsys.disabled():
        print(f"\nMI-Net official on {len(pairs)} SOTS pairs: " + ", ".join(f"{k} {v:.3f} dB"
                                                                            for k, v in scores.items()))
    assert scores["float32"] > 37.5
    assert abs(scores["mixed_bfloat16"] - scores["float32"]) <= 0.3


def test_guided_filter_computes_in_float32_under_mixed_policies():
    from tfdehaze.layers import GuidedFilter
    guide = tf.random.stateless_uniform([1, 32, 32, 1], seed=[5, 6])
    x = tf.random.stateless_uniform([1, 32, 32, 1], seed=[7, 8])
    want = GuidedFilter(radius=3, eps=1e-4)(guide, x)
    for policy in POLICIES:
        with precision.policy(policy):
            layer = GuidedFilter(radius=3, eps=1e-4)
        got = layer(tf.cast(guide, tf.bfloat16), tf.cast(x, tf.bfloat16))
        assert layer.compute_dtype == "float32" and got.dtype == tf.float32
        # only the inputs' rounding to bfloat16 differs, not the filter's arithmetic
        ref = GuidedFilter(radius=3, eps=1e-4)(tf.cast(tf.cast(guide, tf.bfloat16), tf.float32),
                                                tf.cast(tf.cast(x, tf.bfloat16), tf.float32))
        np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-6)
        assert float(tf.reduce_max(tf.abs(got - want))) < 0.02
