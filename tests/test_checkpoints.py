"""`tfdehaze.checkpoints` through its users outside training: `registry.load_run` (tfdehaze-eval, -dehaze, -export
and the distillation teacher) falls back past a garbage state file and a damaged latest checkpoint, warns, and
refuses naming the files when nothing reads back."""
import json

import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.models import registry

KWARGS = {"filters": 4, "steps": 1}


def _run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "minet", "model_kwargs": KWARGS}))
    model = registry.build("minet", **KWARGS)
    model(tf.zeros([1, 16, 16, 3]))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(run / "checkpoints"), 3)
    saved = {}
    for step in (1, 2):
        for variable in model.trainable_variables:
            variable.assign(tf.fill(variable.shape, float(step) / 10))
        manager.save(checkpoint_number=step)
        saved[step] = [v.numpy().copy() for v in model.trainable_variables]
    return run, saved


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def test_load_run_takes_the_latest_checkpoint(tmp_path):
    run, saved = _run(tmp_path)
    for got, want in zip(_weights(registry.load_run(run)), saved[2]):
        np.testing.assert_array_equal(got, want)


def test_load_run_falls_back_past_damage_and_says_so(tmp_path):
    run, saved = _run(tmp_path)
    (run / "checkpoints" / "checkpoint").write_bytes(b"\xff\xfe\x00 garbage")
    (run / "checkpoints" / "ckpt-2.index").write_bytes(b"not an index")
    with pytest.warns(UserWarning) as caught:
        model = registry.load_run(run)
    text = " ".join(str(w.message) for w in caught)
    assert "cannot be read (it is not text)" in text and "skipping checkpoint" in text and "ckpt-2.index" in text
    for got, want in zip(_weights(model), saved[1]):
        np.testing.assert_array_equal(got, want)


def test_load_run_with_nothing_readable_names_the_files(tmp_path):
    run, _ = _run(tmp_path)
    for step in (1, 2):
        (run / "checkpoints" / f"ckpt-{step}.index").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"no checkpoint that reads back .*ckpt-2\.index.*ckpt-1\.index"):
        registry.load_run(run)
