"""Two MirroredStrategy replicas (two logical CPUs) give the same update as one replica on the same global batch.

Runs in a subprocess: logical devices must be configured before anything touches TensorFlow. The tiny models use
instance normalisation (per example), so splitting the batch changes nothing but float round-off.
"""
import subprocess
import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def replica_results(tmp_path_factory, tiny_script, tiny):
    import os
    out = tmp_path_factory.mktemp("replicas") / "results.npz"
    env = dict(os.environ, PYTHONPATH=str(__import__("pathlib").Path(tiny_script).parents[2]),
               TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, tiny_script, "--replicas", str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize("kind", ["supervised", "clipnorm", "gan"])
def test_two_replicas_equal_one(replica_results, kind):
    r = replica_results
    assert r[f"{kind}/one/replicas"] == 1 and r[f"{kind}/two/replicas"] == 2
    np.testing.assert_allclose(r[f"{kind}/two/losses"], r[f"{kind}/one/losses"], rtol=1e-5, atol=1e-6)
    keys = sorted(k.split("/", 2)[2] for k in r if k.startswith(f"{kind}/one/") and "/" in k.split("/", 2)[2])
    assert any(k.startswith("model/") for k in keys) and any(k.startswith("optimizer/") for k in keys)
    if kind == "gan":
        assert any(k.startswith("discriminator/") for k in keys)
    moved = 0.0
    for key in keys:
        one, two = r[f"{kind}/one/{key}"], r[f"{kind}/two/{key}"]
        np.testing.assert_allclose(two, one, rtol=0, atol=1e-5, err_msg=key)
        moved = max(moved, float(np.abs(one).max()))
    assert moved > 0


def test_trainer_with_two_replicas_and_resume_equals_one_replica(replica_results):
    """Trainer.fit over 2 replicas, stopped at 4 steps and resumed to 6, equals 6 steps on 1 replica."""
    r = replica_results
    assert r["trainer/one/replicas"] == 1 and r["trainer/two/replicas"] == 2
    keys = sorted(k[len("trainer/one/"):] for k in r if k.startswith("trainer/one/") and k.count("/") > 2)
    assert len(keys) > 10
    for key in keys:
        np.testing.assert_allclose(r[f"trainer/two/{key}"], r[f"trainer/one/{key}"], rtol=0, atol=1e-5, err_msg=key)
