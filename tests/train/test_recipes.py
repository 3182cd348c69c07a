"""Recipes: JSON round trip, validation, learning-rate schedules, the papers' values."""
import json

import numpy as np
import pytest

from tfdehaze.train import recipes
from tfdehaze.train.recipes import Recipe, build_optimizer, build_schedule, get_recipe


@pytest.mark.parametrize("name", recipes.names())
def test_json_round_trip(name):
    recipe = get_recipe(name)
    again = Recipe.from_json(recipe.to_json())
    assert again == recipe
    assert json.loads(again.to_json()) == json.loads(recipe.to_json())


def test_get_recipe_returns_a_copy():
    a = get_recipe("guided-pix2pix")
    a.model_kwargs["depth"] = 3
    assert get_recipe("guided-pix2pix").model_kwargs == {}


def test_guided_pix2pix_is_the_paper_recipe():
    r = get_recipe("guided-pix2pix")
    assert (r.model, r.step, r.batch_size, r.image_size) == ("guided-pix2pix", "gan", 1, 512)
    assert r.losses == [{"type": "l1", "weight": 100.0}, {"type": "gan", "weight": 1.0}]
    assert (r.learning_rate, r.beta_1, r.beta_2) == (1e-4, 0.5, 0.999)
    assert r.lr_schedule == {"kind": "exponential", "decay_steps": 100, "decay_rate": 0.9, "staircase": False}


def test_guided_pix2pix_learning_rate_schedule():
    schedule = build_schedule(get_recipe("guided-pix2pix"))
    assert float(schedule(200)) == pytest.approx(1e-4 * 0.9 ** 2, rel=1e-6)
    assert float(schedule(150)) == pytest.approx(1e-4 * 0.9 ** 1.5, rel=1e-6)  # not staircase
    staircase = get_recipe("guided-pix2pix").replace(
        lr_schedule={"kind": "exponential", "decay_steps": 100, "decay_rate": 0.9, "staircase": True})
    assert float(build_schedule(staircase)(150)) == pytest.approx(1e-4 * 0.9, rel=1e-6)


def test_optimizer_learning_rate_follows_iterations():
    optimizer = build_optimizer(get_recipe("guided-pix2pix"))
    assert (optimizer.beta_1, optimizer.beta_2) == (0.5, 0.999)
    optimizer.iterations.assign(200)
    assert float(optimizer.learning_rate) == pytest.approx(1e-4 * 0.81, rel=1e-6)


def test_minet_schedule_steps_down_every_20k():
    r = get_recipe("minet")
    assert (r.step, r.losses, r.learning_rate, r.beta_1, r.steps) == (
        "supervised", [{"type": "l1", "weight": 1.0}], 1e-3, 0.99, 350000)
    schedule = build_schedule(r)
    values = [float(schedule(s)) for s in (0, 19999, 20000, 45000)]
    np.testing.assert_allclose(values, [1e-3, 1e-3, 1e-4, 1e-5], rtol=1e-5)


def test_step_and_cosine_schedules_and_epoch_units():
    base = Recipe(model="m", learning_rate=0.1)
    step = build_schedule(base.replace(lr_schedule={"kind": "step", "boundaries": [10, 20], "factor": 0.5}))
    np.testing.assert_allclose([float(step(s)) for s in (5, 15, 25)], [0.1, 0.05, 0.025], rtol=1e-6)
    cosine = build_schedule(base.replace(lr_schedule={"kind": "cosine_restarts", "first_decay_steps": 10,
                                                         "t_mul": 1.0}))
    np.testing.assert_allclose([float(cosine(s)) for s in (0, 5, 10, 15)], [0.1, 0.05, 0.1, 0.05], atol=1e-6)
    epochs = base.replace(lr_schedule={"kind": "exponential", "decay_steps": 2, "decay_rate": 0.5, "unit": "epochs"})
    assert float(build_schedule(epochs, steps_per_epoch=50)(100)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="steps per epoch"):
        build_schedule(epochs)
    assert build_schedule(base) == 0.1


@pytest.mark.parametrize("fields, message", [
    ({"model": "m", "steps": 10, "epochs": 2}, "steps or epochs, not both"),
    ({"model": "m", "batch_size": 0}, "batch_size must be a positive integer"),
    ({"model": "m", "crop_size": 600}, "crop_size 600 is larger than image_size 512"),
    ({"model": "m", "lr_schedule": {"kind": "linear"}}, "lr_schedule kind 'linear'"),
    ({"model": "m", "data": {"hazy": "x"}}, "recipe data must be"),
    ({"model": "m", "learning_rte": 1e-3}, r"unknown recipe field\(s\) \['learning_rte'\]"),
    ({"steps": 3}, "needs a 'model' field"),
])
def test_bad_recipes_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Recipe.from_dict(fields)


def test_bad_schedule_arguments_are_named():
    recipe = Recipe(model="m", lr_schedule={"kind": "exponential", "decay_step": 3, "decay_rate": 0.5})
    with pytest.raises(ValueError, match="bad lr_schedule"):
        build_schedule(recipe)


def test_unknown_recipe_name():
    with pytest.raises(ValueError, match="no training recipe named 'pix3pix'; known: guided-pix2pix, kddn, "
                                         "kddn-teacher, minet, rfd, rfd-teacher"):
        get_recipe("pix3pix")
