"""The training engine on tiny plain-Keras models: run directory, resume, half-written checkpoints, NaN stop."""
import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.train import NonFiniteLossError, RunDirError, Trainer
from tfdehaze.train.engine import _MetricsLog


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_run_directory(tmp_path, tiny):
    run = tmp_path / "run"
    trainer, result = tiny.run(run, 7, checkpoint_every=3, log_every=2, sample_every=3)
    assert result["step"] == 7
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-7")
    assert {p.name for p in (run / "checkpoints").glob("*.index")} == {"ckpt-3.index", "ckpt-6.index",
                                                                     "ckpt-7.index"}
    assert json.loads((run / "config.json").read_text()) == {"batch_size": 2, "tiny": True}

    rows = read_metrics(run)
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 7]
    assert list(rows[0]) == ["step", "epoch", "time", "lr", "loss"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 1, 2]  # 3 steps per epoch
    # the learning rate follows the schedule driven by optimizer.iterations: 1e-2 * 0.9 ** (step / 3)
    np.testing.assert_allclose([float(r["lr"]) for r in rows], [1e-2 * 0.9 ** (s / 3) for s in (2, 4, 6, 7)],
                               rtol=1e-5)

    # TensorBoard events: scalars and images with TensorBoard's plugin metadata
    plugins = {}
    for event in tf.compat.v1.train.summary_iterator(str(next((run / "logs").glob("events.*")))):
        for value in event.summary.value:
            plugins.setdefault(value.tag, value.metadata.plugin_data.plugin_name or plugins.get(value.tag))
    assert plugins == {"loss/loss": "scalars", "learning_rate": "scalars", "samples/hazy_restored_clear": "images"}

    png = tf.io.decode_png(tf.io.read_file(str(run / "samples" / "step-0000006.png"))).numpy()
    assert png.shape == (2 * 32, 3 * 32, 3)  # two samples, hazy | restored | clear
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-0000003.png", "step-0000006.png"]

    # final weights, as .weights.h5 and .keras, equal the trained model
    trained = trainer.step.model
    fresh = tiny.generator()
    fresh.load_weights(run / "model.weights.h5")
    for a, b in zip(fresh.weights, trained.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded = keras.saving.load_model(run / "model.keras")
    x = tiny.make_data(n=1)[0]
    np.testing.assert_allclose(loaded(x)["dehazed"], trained(x)["dehazed"], atol=1e-6)
    assert not list(run.glob(".*tmp*"))  # no temporary files left


def test_fresh_run_refused_where_checkpoints_exist(tmp_path, tiny):
    tiny.run(tmp_path, 2, checkpoint_every=1)
    with pytest.raises(RunDirError, match="already has checkpoints.*--resume"):
        tiny.run(tmp_path, 4)


def test_resume_matches_uninterrupted_run(tmp_path, tiny):
    """Stop at step 5 (mid-epoch), resume to 10: same weights, optimizer slots and losses as a 10-step run."""
    straight, _ = tiny.run(tmp_path / "a", 10, checkpoint_every=4)
    tiny.run(tmp_path / "b", 5, checkpoint_every=4)
    resumed, result = tiny.run(tmp_path / "b", 10, checkpoint_every=4, resume=True)
    assert result["step"] == 10
    assert int(resumed.step.optimizer.iterations.numpy()) == 10
    tiny.assert_states_equal(tiny.state(straight.step), tiny.state(resumed.step), atol=1e-6)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in b] == [str(s) for s in range(1, 11)]
    np.testing.assert_allclose([float(r["loss"]) for r in a], [float(r["loss"]) for r in b], rtol=1e-5)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]


def test_half_written_checkpoint_never_replaces_the_good_one(tmp_path, tiny, monkeypatch):
    from tensorflow.python.checkpoint import checkpoint_management

    run = tmp_path / "run"
    tiny.run(run, 4, checkpoint_every=2)  # ckpt-2, ckpt-4
    _, good = tiny.read_checkpoint(str(run / "checkpoints" / "ckpt-4"))

    # 1. A crash after TensorFlow wrote ckpt-6's files but before it updated the `checkpoint` state file.
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash while saving")

    monkeypatch.setattr(checkpoint_management, "update_checkpoint_state_internal", crash)
    with pytest.raises(KeyboardInterrupt):
        tiny.run(run, 8, checkpoint_every=2, resume=True)
    monkeypatch.undo()
    assert (run / "checkpoints" / "ckpt-6.index").exists()  # written, but never recorded as the latest
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-4")

    # 2. Stray files of a newer checkpoint: garbage index, truncated data, a leftover temp folder.
    folder = run / "checkpoints"
    data = (folder / "ckpt-4.data-00000-of-00001").read_bytes()
    (folder / "ckpt-9.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    (folder / "ckpt-9.index").write_bytes(b"\x00garbage")
    (folder / "ckpt-9_temp").mkdir()
    (folder / "ckpt-9_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"junk")

    trainer = Trainer(tiny.make_step(seed=7), tiny.data_fn(*tiny.make_data(), 2), run, batch_size=2, log_every=1,
                      verbose=0)
    assert trainer.setup(resume=True) == 4
    tiny.assert_states_equal(tiny.state(trainer.step), good)
    assert trainer.fit(10)["step"] == 10
    assert tiny.read_checkpoint(tf.train.latest_checkpoint(str(folder)))[0] == 10
    assert [int(r["step"]) for r in read_metrics(run)] == list(range(1, 11))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny):
    hazy, clear = tiny.make_data(n=20, nan_from=8)  # batch 5 (examples 8, 9) is NaN: step 5 fails
    data = tiny.data_fn(hazy, clear, 2, shuffle=False)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 5: loss=nan") as error:
        tiny.run(tmp_path, 20, checkpoint_every=2, data=data)
    assert error.value.step == 5 and np.isnan(error.value.losses["loss"])
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith("ckpt-4") and str(latest) in str(error.value)
    assert not list((tmp_path / "checkpoints").glob("ckpt-5*"))
    step, arrays = tiny.read_checkpoint(latest)
    assert step == 4
    assert all(np.isfinite(a).all() for a in arrays.values())
    assert [int(r["step"]) for r in read_metrics(tmp_path)] == [1, 2, 3, 4]


def test_metrics_truncate_drops_later_and_torn_rows(tmp_path):
    log = _MetricsLog(tmp_path / "metrics.csv")
    for step in range(1, 9):
        log.append({"step": step, "loss": 1.0 / step})
    with open(tmp_path / "metrics.csv", "a") as file:
        file.write("9,0.1")  # torn line
    log.truncate(5)
    assert [int(r["step"]) for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]
    log.append({"step": 6, "loss": 0.5})
    assert [int(r["step"]) for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(RunDirError, match="columns"):
        log.append({"step": 7, "other": 0.5})


def test_data_without_a_full_batch_is_refused(tmp_path, tiny):
    with pytest.raises(ValueError, match="no full batch of 2"):
        tiny.run(tmp_path, 3, data=tiny.data_fn(*tiny.make_data(n=1), 2))
