"""Fixtures for the training tests: the tiny-model helper module and an environment for subprocesses."""
import importlib.util
import os
import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture(scope="session")
def tiny():
    """tests/train/tiny_run.py as a module (tiny Keras models, data and runs)."""
    spec = importlib.util.spec_from_file_location("tiny_run", HERE / "tiny_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_script():
    return str(HERE / "tiny_run.py")


@pytest.fixture
def subprocess_env(tmp_path):
    """The environment for `python ...` subprocesses: the repo importable, quiet TF, the shared sample cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env
