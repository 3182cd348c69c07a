"""Shared fixtures of the export / serving tests: a tiny Guided-Pix2Pix trained 2 steps into a run directory, its
export written by the installed ``tfdehaze-export`` script, and helpers to run installed scripts."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from serving_helpers import TINY, last_line, script  # noqa: E402


@pytest.fixture(scope="session")
def gp2p_run(tmp_path_factory):
    """A run directory as tfdehaze-train leaves it (config.json from the recipe, model.weights.h5) for a tiny
    Guided-Pix2Pix with random weights: training it would only add compile time."""
    import tensorflow as tf

    from tfdehaze.models import registry
    from tfdehaze.train import get_recipe

    run = tmp_path_factory.mktemp("gp2p-run") / "run"
    run.mkdir()
    recipe = get_recipe("guided-pix2pix").replace(model_kwargs=TINY, image_size=32, batch_size=1, steps=2)
    (run / "config.json").write_text(recipe.to_json())
    model = registry.build("guided-pix2pix", **TINY)
    model(tf.zeros([1, 32, 32, 3]), training=False)
    model.save_weights(run / "model.weights.h5")
    return run


@pytest.fixture(scope="session")
def gp2p_keras(gp2p_run):
    from tfdehaze.export import load_source

    return load_source(gp2p_run)


@pytest.fixture(scope="session")
def gp2p_export(gp2p_run, tmp_path_factory):
    """MODEL_BASE_PATH written by the installed tfdehaze-export from the run directory."""
    base = tmp_path_factory.mktemp("exports") / "gp2p"
    done = script("tfdehaze-export", gp2p_run, "--out", base)
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == str(base / "1")
    return base
