"""Recipes: JSON round trip, validation, learning-rate schedules, the papers' values."""
import dataclasses
import json
import subprocess
import sys

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
    with pytest.raises(ValueError, match=r"lr_schedule: unknown option\(s\) \['decay_step'\] for kind 'exponential'"):
        Recipe(model="m", lr_schedule={"kind": "exponential", "decay_step": 3, "decay_rate": 0.5})


def test_unknown_recipe_name():
    with pytest.raises(ValueError, match="no training recipe named 'pix3pix'; known: guided-pix2pix, kddn, "
                                         "kddn-teacher, minet, rfd, rfd-teacher"):
        get_recipe("pix3pix")


# --- each field's type and range (issue 15 §4): the same check for recipe files, --config and the flags ---------

BAD_VALUES = [
    # integers reject floats, booleans, strings and values below their minimum
    *[(field, value, "must be a positive integer")
      for field in ("steps", "epochs", "batch_size", "image_size", "crop_size", "checkpoint_every", "log_every",
                    "sample_every", "keep")
      for value in (0, -3, 2.5, 4.0, True, "8")],
    ("seed", -1, "must be a non-negative integer"), ("seed", 1.5, "must be a non-negative integer"),
    ("seed", False, "must be a non-negative integer"),
    # positive numbers
    *[(field, value, "must be a positive number")
      for field in ("learning_rate", "clipnorm", "global_clipnorm")
      for value in (0, -1, "x", True, float("nan"), float("inf"))],
    # [0, 1)
    *[(field, value, r"must be a number in \[0, 1\)")
      for field in ("beta_1", "beta_2") for value in (1, 1.0, 5.0, -0.1, "0.9", None)],
    ("flip", "yes", "must be true or false"), ("flip", 1, "must be true or false"),
    ("flip", None, "must be true or false"),
    ("model", "", "must be a non-empty string"), ("model", 5, "must be a non-empty string"),
    ("step", None, "must be a non-empty string"),
    ("model_kwargs", [1], "must be a JSON object"), ("step_options", "x", "must be a JSON object"),
    ("losses", {"type": "l1"}, "must be a JSON list"), ("losses", [], "non-empty list"),
    ("losses", [{"type": "l1", "weight": "x"}], r"losses\[0\].weight \(l1\) must be a number"),
    ("data", {"hazy": 5, "clear": "c"}, "data.hazy must be a non-empty string"),
    ("data", {"manifest": None}, "data.manifest must be a non-empty string"),
    ("data", {"hazy": "h"}, "recipe data must be"), ("data", "d.csv", "must be a JSON object or null"),
    ("lr_schedule", {"kind": "exponential", "decay_steps": 100, "decay_rate": "x"},
     r"lr_schedule.decay_rate must be a number in \(0, 1\]"),
    ("lr_schedule", {"kind": "exponential", "decay_steps": 100, "decay_rate": 0},
     r"lr_schedule.decay_rate must be a number in \(0, 1\]"),
    ("lr_schedule", {"kind": "exponential", "decay_steps": 100, "decay_rate": 1.5},
     r"lr_schedule.decay_rate must be a number in \(0, 1\]"),
    ("lr_schedule", {"kind": "exponential", "decay_steps": 0.5, "decay_rate": 0.9},
     "lr_schedule.decay_steps must be a positive integer"),
    ("lr_schedule", {"kind": "exponential", "decay_steps": 100, "decay_rate": 0.9, "staircase": "no"},
     "lr_schedule.staircase must be true or false"),
    ("lr_schedule", {"kind": "exponential", "decay_rate": 0.9}, "kind 'exponential' needs decay_steps"),
    ("lr_schedule", {"kind": "step", "boundaries": [20, 10], "factor": 0.5}, "boundaries must be increasing"),
    ("lr_schedule", {"kind": "step", "boundaries": [10, 2.5], "factor": 0.5}, "must hold positive integers"),
    ("lr_schedule", {"kind": "step", "boundaries": [10], "factor": -1}, "factor must be a positive number"),
    ("lr_schedule", {"kind": "cosine_restarts", "first_decay_steps": 10, "alpha": 2},
     r"alpha must be a number in \[0, 1\]"),
    ("lr_schedule", {"kind": "constant", "unit": "days"}, 'unit must be "steps" or "epochs"'),
    ("lr_schedule", {"kind": "constant", "rate": 1}, r"unknown option\(s\) \['rate'\]"),
]


@pytest.mark.parametrize("field, value, message", BAD_VALUES,
                         ids=[f"{f}={json.dumps(v)}" for f, v, _ in BAD_VALUES])
def test_each_field_is_checked_by_type_and_range(field, value, message):
    """Recipe.from_dict (recipe files, --config) and recipe.replace (flags, the Python API) refuse the value with
    one message naming the field."""
    with pytest.raises(ValueError, match=f"recipe (field )?{field}") as raised:
        Recipe.from_dict({"model": "m", field: value})
    assert raised.match(message)
    with pytest.raises(ValueError, match=message):
        get_recipe("minet").replace(**{field: value, **({"steps": None} if field == "epochs" else {})})


@pytest.mark.parametrize("field, value", [
    ("steps", 1), ("epochs", 1), ("batch_size", 1), ("crop_size", 1), ("keep", 1), ("seed", 0),
    ("learning_rate", 1e-8), ("clipnorm", 0.5), ("global_clipnorm", 1), ("beta_1", 0), ("beta_2", 0.999999),
    ("flip", False), ("clipnorm", None), ("data", {"hazy": "h", "clear": "c"}),
    ("lr_schedule", {"kind": "exponential", "decay_steps": 1, "decay_rate": 1, "staircase": True, "unit": "epochs"}),
    ("lr_schedule", {"kind": "cosine_restarts", "first_decay_steps": 3, "t_mul": 2.0, "m_mul": 0.5, "alpha": 0}),
])
def test_values_at_the_limits_are_accepted(field, value):
    fields = {"model": "m", field: value, **({"image_size": 1} if field == "crop_size" else {})}
    assert getattr(Recipe.from_dict(fields), field) == value


def test_numpy_numbers_become_python_numbers():
    recipe = Recipe(model="m", batch_size=np.int64(4), learning_rate=np.float32(0.5))
    assert type(recipe.batch_size) is int and type(recipe.learning_rate) is float
    assert json.loads(recipe.to_json())["batch_size"] == 4


def test_every_field_has_a_rule():
    assert set(recipes.FIELDS) == {f.name for f in dataclasses.fields(Recipe)}


@pytest.mark.parametrize("overrides, message", [
    ({"clipnorm": "x"}, 'recipe field clipnorm must be a positive number or null, got "x"'),
    ({"clipnorm": -1}, "recipe field clipnorm must be a positive number or null, got -1"),
    ({"beta_1": 5.0}, r"recipe field beta_1 must be a number in \[0, 1\), got 5.0"),
    ({"flip": "yes"}, 'recipe field flip must be true or false, got "yes"'),
    ({"steps": 0}, "recipe field steps must be a positive integer or null, got 0"),
    ({"batch_size": 4.0}, "recipe field batch_size must be a positive integer, got 4.0"),
    ({"image_size": True}, "recipe field image_size must be a positive integer, got true"),
    ({"data": {"hazy": 5, "clear": "c"}}, "recipe field data.hazy must be a non-empty string"),
    ({"lr_schedule": {"kind": "exponential", "decay_steps": 10, "decay_rate": "x"}},
     r'recipe field lr_schedule.decay_rate must be a number in \(0, 1\], got "x"'),
    ({"batch_sise": 4}, r"unknown recipe field\(s\) \['batch_sise'\]"),
])
def test_config_file_errors_name_the_field_and_the_file(tmp_path, overrides, message):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps(overrides))
    with pytest.raises(ValueError, match=f"^config file {config}: {message}"):
        recipes.resolve("minet", config_file=config)


def test_config_file_that_is_a_folder_or_not_a_json_object(tmp_path):
    with pytest.raises(ValueError, match=f"config file {tmp_path} is a folder, not a JSON file"):
        recipes.resolve("minet", config_file=tmp_path)
    with pytest.raises(ValueError, match="config file .*missing.json does not exist"):
        recipes.resolve("minet", config_file=tmp_path / "missing.json")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"model": "caf\xe9"}')
    with pytest.raises(ValueError, match="config file .*latin.json is not UTF-8"):
        recipes.resolve("minet", config_file=latin)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match="config file .*list.json must hold a JSON object of recipe fields"):
        recipes.resolve("minet", config_file=listed)


def test_data_paths_of_the_wrong_kind_say_so(tmp_path):
    image = tmp_path / "clear.png"
    image.write_bytes(b"png")
    with pytest.raises(ValueError, match=f"data folder {image} is a file, not a folder of clear images"):
        recipes.resolve("minet", data={"hazy": str(tmp_path), "clear": str(image)})
    with pytest.raises(ValueError, match=f"manifest {tmp_path} is a folder, not a CSV file"):
        recipes.resolve("minet", data={"manifest": str(tmp_path)})
    with pytest.raises(ValueError, match=f"teacher {image} is a file, not a run directory"):
        recipes.resolve("kddn", teacher=image)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": {"manifest": str(tmp_path / "none.csv")}}))
    with pytest.raises(ValueError, match=f"config file {config}: manifest .*none.csv does not exist"):
        recipes.resolve("minet", config_file=config)


def test_flags_are_checked_like_fields():
    with pytest.raises(ValueError, match="recipe field steps must be a positive integer or null, got 0"):
        recipes.resolve("minet", steps=0)
    with pytest.raises(ValueError, match="recipe field batch_size must be a positive integer, got 2.5"):
        recipes.resolve("minet", batch_size=2.5)


def test_config_length_replaces_the_recipe_length(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"epochs": 3}))
    recipe = recipes.resolve("minet", config_file=config)  # minet's recipe has steps=350000
    assert (recipe.steps, recipe.epochs) == (None, 3)


def test_a_damaged_run_config_is_named_on_resume(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**get_recipe("minet").to_dict(), "keep": 0}))
    with pytest.raises(ValueError, match=f"run config {tmp_path / 'config.json'}: recipe field keep must be"):
        recipes.resolve("minet", run_dir=tmp_path, resume=True)


def test_recipes_and_the_train_parser_import_no_tensorflow():
    """The command line reads recipe names and checks its flags before TensorFlow starts."""
    code = ("import sys, tfdehaze.train.recipes, tfdehaze.train.strategy, tfdehaze.cli.train; "
            "tfdehaze.cli.train._parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
