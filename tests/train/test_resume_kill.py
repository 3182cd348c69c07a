"""A training process killed with SIGKILL resumes from its last checkpoint with the saved weights and optimizer."""
import csv
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from tfdehaze.train import Trainer


def logged_steps(run_dir):
    with open(run_dir / "metrics.csv", newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file)]


def test_sigkill_then_resume(tmp_path, tiny, tiny_script, subprocess_env):
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, tiny_script, str(run), "1000000", "--checkpoint-every", "7"],
                               env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while True:
            latest = tf.train.latest_checkpoint(str(run / "checkpoints"))
            if latest and int(latest.rsplit("-", 1)[1]) >= 14:
                break
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no second checkpoint within 180 s"
            time.sleep(0.02)
        time.sleep(0.5)  # let it run on past the checkpoint: later metrics rows, perhaps a save in progress
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL

    latest = tf.train.latest_checkpoint(str(run / "checkpoints"))
    saved_step, saved = tiny.read_checkpoint(latest)
    assert saved_step >= 14 and saved_step % 7 == 0
    assert max(logged_steps(run)) >= saved_step

    trainer = Trainer(tiny.make_step(seed=99), tiny.data_fn(*tiny.make_data(), 2), run, batch_size=2,
                      checkpoint_every=7, log_every=1, verbose=0)
    assert trainer.setup(resume=True) == saved_step
    restored = tiny.state(trainer.step)
    tiny.assert_states_equal(restored, saved)  # weights AND Adam slots (m, v) and iterations
    assert int(trainer.step.optimizer.iterations.numpy()) == saved_step
    slots = [v for k, v in restored.items() if k.startswith("optimizer/") and v.ndim > 0]
    assert slots and all(np.abs(v).max() > 0 for v in slots)  # trained slots, not fresh zeros
    assert logged_steps(run) == list(range(1, saved_step + 1))  # rows after the checkpoint were dropped

    assert trainer.fit(saved_step + 3)["step"] == saved_step + 3
    assert logged_steps(run) == list(range(1, saved_step + 4))
