"""Run directories: one run at a time (lock), another run's folder left unchanged, damaged checkpoints on --resume,
a full disk during a save, and non-finite weights never saved. Console-script tests run the installed
``tfdehaze-train`` in a subprocess, as a user does."""
import csv
import errno
import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from harness import HalfWriter

from tfdehaze.train import (
    NonFiniteLossError,
    Recipe,
    RunDirError,
    SupervisedStep,
    Trainer,
    get_recipe,
    refuse_existing_run,
    train,
)
from tfdehaze.train.engine import RUN_FILES, RunDirLock, _MetricsLog

TRAIN = shutil.which("tfdehaze-train", path=str(pathlib.Path(sys.executable).parent)) or "tfdehaze-train"
# A tiny MI-Net on the bundled sample set: a checkpoint every 2 steps.
TINY = {"model_kwargs": {"filters": 4, "steps": 1, "reduction": 2}, "image_size": 32, "batch_size": 2,
        "checkpoint_every": 2, "log_every": 1, "sample_every": 1000}
ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"


def train_cmd(tmp_path, run, *args, **fields):
    config = tmp_path / f"tiny-{len(list(tmp_path.glob('tiny-*.json')))}.json"
    config.write_text(json.dumps({**TINY, **fields}))
    return [TRAIN, "minet", "--config", str(config), "--out", str(run), "--quiet", *map(str, args)]


def snapshot(folder):
    """Every file below ``folder`` (hidden ones too) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(pathlib.Path(folder).rglob("*")) if p.is_file()}


def logged_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def one_error_line(stderr):
    """The one ``tfdehaze-train: error:`` line, last on stderr, with no traceback (TensorFlow's start-up log lines
    before it are another issue's)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tfdehaze-train: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in stderr, stderr
    return errors[0]


def wait_for(predicate, process, seconds=150):
    deadline = time.time() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"not ready within {seconds} s"
        time.sleep(0.05)


# --- the lock -------------------------------------------------------------------------------------------------------
def test_a_live_run_locks_its_directory_and_sigkill_frees_it(tmp_path, subprocess_env):
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd(tmp_path, run, "--steps", 10 ** 6), env=subprocess_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run / "checkpoints" / "checkpoint").exists(), first)
        first.send_signal(signal.SIGSTOP)  # paused (the CPU is for the others), still holding its lock
        # A second run on the same directory, fresh and --resume: both refused at once, the first one unharmed.
        seconds = [subprocess.Popen(train_cmd(tmp_path, run, "--steps", 4, *extra), env=subprocess_env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for extra in ([], ["--resume"])]
        for second in seconds:
            out, err = second.communicate(timeout=150)
            assert second.returncode == 2, err
            line = one_error_line(err)
            assert f"run directory {run} is in use by another training run (pid {first.pid} on " in line, line
            assert "--resume" in line
        assert first.poll() is None  # still there
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert (run / ".lock").exists()  # left behind by the killed run, but no longer locked

    # --resume is not blocked (in-process: what the script runs after parsing its flags, without another start-up).
    saved = int(tf.train.latest_checkpoint(str(run / "checkpoints")).rsplit("-", 1)[1])
    recipe = Recipe.from_json((run / "config.json").read_text()).replace(steps=saved + 2)
    result = train(recipe, run_dir=run, resume=True, distribute="none", verbose=0)
    assert result["step"] == saved + 2 and result["checkpoint"].endswith(f"ckpt-{saved + 2}")
    assert [int(r["step"]) for r in logged_rows(run)] == list(range(1, saved + 3))
    assert not (run / ".lock").exists()  # released at the end of the run


def test_lock_in_process(tmp_path, subprocess_env):
    """The claim is re-entrant within a process (train() around its Trainer); another process is refused."""
    run = tmp_path / "run"
    with RunDirLock(run):
        with RunDirLock(run, check=False):  # e.g. the Trainer inside train()
            pass
        assert (run / ".lock").exists()  # still held by the outer claim
        other = subprocess.run([sys.executable, "-c", "import sys; from tfdehaze.train.engine import RunDirLock; "
                                "RunDirLock(sys.argv[1])", str(run)], env=subprocess_env, capture_output=True,
                               text=True, timeout=120)
        assert other.returncode == 1 and f"RunDirError: run directory {run} is in use" in other.stderr
    assert not run.exists()  # the claim made the directory, and nothing else was written
    RunDirLock(run).release()  # free again


# --- another run's folder ---------------------------------------------------------------------------------------------
def test_fresh_run_into_another_runs_folder_changes_nothing(tmp_path, subprocess_env):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "config.json").write_text('{"model": "somebody-else"}\n')
    (folder / "data.csv").write_text("hazy,clear\nh/a.png,c/a.png\n")
    (folder / "metrics.csv").write_text("step,loss\n1,0.5\n2,0.25\n")
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    done = subprocess.run(train_cmd(tmp_path, folder, "--steps", 2), env=subprocess_env, capture_output=True,
                          text=True, timeout=150)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert f"run directory {folder} already holds config.json, data.csv and metrics.csv" in line, line
    assert "nothing was changed" in line
    assert snapshot(folder) == before  # byte for byte, and nothing added (no .lock, logs/ or checkpoints/)


@pytest.mark.parametrize("name", RUN_FILES + ("checkpoints/checkpoint",))
def test_each_run_file_marks_a_folder_as_taken(tmp_path, tiny, name):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_text("not this run's\n")
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match=f"run directory {tmp_path} already (holds|has)"):
        tiny.run(tmp_path, 2)  # a Trainer on its own
    assert snapshot(tmp_path) == before
    refuse_existing_run(tmp_path, resume=True)  # resuming it is the user's call


# --- damaged checkpoints on --resume ---------------------------------------------------------------------------------
def test_resume_over_damaged_checkpoints_loses_nothing(tmp_path, subprocess_env, capsys):
    """The console script on an unreadable state file; the same `train` in process (what the script runs after
    parsing its flags) on a damaged latest index or data file, and on a run where nothing reads back."""
    base = tmp_path / "base"
    train(get_recipe("minet").replace(**TINY, steps=4), run_dir=base, distribute="none", verbose=0)
    rows = logged_rows(base)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    data = (base / "checkpoints" / "ckpt-4.data-00000-of-00001").read_bytes()

    def damage(name, *changes):
        run = tmp_path / name
        shutil.copytree(base, run)
        for file, content in changes:
            (run / "checkpoints" / file).write_bytes(content)
        return run

    runs = {"state": damage("state", ("checkpoint", b"\x00\xff not a checkpoint state \xfe")),
            "none": damage("none", ("ckpt-4.index", b"garbage"), ("ckpt-2.data-00000-of-00001", data[:100])),
            "index": damage("index", ("ckpt-4.index", b"garbage")),
            "data": damage("data", ("ckpt-4.data-00000-of-00001", data[:len(data) // 2]))}
    before = {name: snapshot(run) for name, run in runs.items()}
    process = subprocess.Popen([TRAIN, "minet", "--resume", "--steps", "6", "--out", str(runs["state"]), "--quiet"],
                               env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    capsys.readouterr()
    errors = {}
    for name in ("index", "data", "none"):  # meanwhile, in this process
        recipe = Recipe.from_json((runs[name] / "config.json").read_text()).replace(steps=6)
        try:
            assert train(recipe, run_dir=runs[name], resume=True, distribute="none", verbose=0)["step"] == 6
        except RunDirError as error:
            errors[name] = str(error)
        else:
            errors[name] = capsys.readouterr().err
    out, err = process.communicate(timeout=240)

    # Unreadable state file: the checkpoints are found by name; ckpt-4 reads back, so nothing is redone.
    assert process.returncode == 0, err
    assert f"the checkpoint state file {runs['state'] / 'checkpoints' / 'checkpoint'} cannot be read" in err
    assert "Resuming from" in err and "ckpt-4 (step 4)" in err
    assert logged_rows(runs["state"])[:4] == rows
    # A damaged latest checkpoint: skipped, saying which file and why; training continues from ckpt-2.
    for name, why in (("index", "ckpt-4.index cannot be read"),
                      ("data", "ckpt-4.data-00000-of-00001 cannot be read")):
        err = errors[name]
        assert f"skipping checkpoint {runs[name] / 'checkpoints' / 'ckpt-4'}: {why}" in err, err
        assert "ckpt-2 (step 2)" in err
        resumed = logged_rows(runs[name])
        assert resumed[:2] == rows[:2] and [r["step"] for r in resumed] == [str(s) for s in range(1, 7)]
        np.testing.assert_allclose([float(r["loss"]) for r in resumed[2:4]], [float(r["loss"]) for r in rows[2:]],
                                   rtol=1e-4)  # steps 3 and 4 redone exactly
    for name in ("state", "index", "data"):
        run = runs[name]
        assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-6"), name
        after = snapshot(run)
        for file in ("ckpt-2.index", "ckpt-2.data-00000-of-00001"):
            assert after[f"checkpoints/{file}"] == before[name][f"checkpoints/{file}"]  # never rewritten
    # Nothing reads back: refused, naming the files; the directory is left exactly as it was.
    line = errors["none"]
    assert f"cannot resume {runs['none']}: no checkpoint in {runs['none'] / 'checkpoints'} can be read back" in line
    assert "ckpt-4.index cannot be read" in line and "ckpt-2.data-00000-of-00001 cannot be read" in line
    assert snapshot(runs["none"]) == before["none"]


# --- a full disk ----------------------------------------------------------------------------------------------------
def full_disk(monkeypatch, module, name):
    """Writes through ``open`` in ``module`` to a file whose name ends with ``name`` fail half way with ENOSPC."""
    def fake_open(file, mode="r", *args, **kwargs):
        real = open(file, mode, *args, **kwargs)
        return HalfWriter(real) if str(file).endswith(name) and set(mode) & set("wax") else real
    monkeypatch.setattr(module, "open", fake_open, raising=False)


def test_full_disk_while_writing_config_or_metrics_keeps_the_previous_file(tmp_path, tiny, monkeypatch):
    import tfdehaze.paths
    import tfdehaze.train.engine

    run = tmp_path / "run"
    tiny.run(run, 2, checkpoint_every=2)
    before = snapshot(run)

    full_disk(monkeypatch, tfdehaze.paths, "config.json")
    with pytest.raises(OSError, match=f"cannot write {run / 'config.json'}: {ENOSPC}; the previous config.json is "
                                      "unchanged") as error:
        tiny.run(run, 4, resume=True)
    assert error.value.errno == errno.ENOSPC
    assert snapshot(run) == before  # config.json whole, no temporary left, nothing else touched
    monkeypatch.undo()

    full_disk(monkeypatch, tfdehaze.train.engine, "metrics.csv")
    with pytest.raises(OSError, match=f"cannot write {run / 'metrics.csv'}: {ENOSPC}; the previous metrics.csv"):
        tiny.run(run, 4, resume=True)
    assert (run / "metrics.csv").read_bytes() == before["metrics.csv"]  # the half row was cut off again
    monkeypatch.undo()
    tiny.run(run, 4, resume=True)
    assert [int(r["step"]) for r in logged_rows(run)] == [1, 2, 3, 4]


def test_metrics_append_failing_half_way_keeps_earlier_rows(tmp_path, monkeypatch):
    import tfdehaze.train.engine

    log = _MetricsLog(tmp_path / "metrics.csv")
    log.append({"step": 1, "loss": 0.5})
    before = (tmp_path / "metrics.csv").read_bytes()
    full_disk(monkeypatch, tfdehaze.train.engine, "metrics.csv")
    with pytest.raises(OSError, match="metrics.csv: No space left on device"):
        log.append({"step": 2, "loss": 0.25})
    assert (tmp_path / "metrics.csv").read_bytes() == before
    (tmp_path / "metrics.csv").unlink()
    with pytest.raises(OSError, match="cannot write .*metrics.csv: No space left on device$"):
        log.append({"step": 1, "loss": 0.5})  # the first row: no half-made file left
    assert not (tmp_path / "metrics.csv").exists()


def test_full_disk_while_saving_a_checkpoint_keeps_the_earlier_ones(tmp_path, tiny, monkeypatch):
    from tensorflow.python.ops import gen_io_ops

    run = tmp_path / "run"
    tiny.run(run, 2, checkpoint_every=2)
    folder = run / "checkpoints"
    state = (folder / "checkpoint").read_bytes()
    _, good = tiny.read_checkpoint(str(folder / "ckpt-2"))

    def merge_half(checkpoint_prefixes, destination_prefix, *args, **kwargs):
        """TensorFlow's last save step, failing after half of the data file is in place."""
        source = f"{checkpoint_prefixes[-1].numpy().decode()}.data-00000-of-00001"
        target = f"{destination_prefix.numpy().decode()}.data-00000-of-00001"
        data = pathlib.Path(source).read_bytes()
        pathlib.Path(target).write_bytes(data[:len(data) // 2])
        raise tf.errors.ResourceExhaustedError(None, None, f"{target}; {ENOSPC}")

    monkeypatch.setattr(gen_io_ops, "merge_v2_checkpoints", merge_half)
    with pytest.raises(OSError, match=f"cannot write checkpoint {folder / 'ckpt-4'}: {ENOSPC}; the earlier checkpoints "
                                      r"are kept \(latest: ckpt-2\)"):
        tiny.run(run, 4, checkpoint_every=2, resume=True)
    monkeypatch.undo()
    assert (folder / "checkpoint").read_bytes() == state
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    tiny.assert_states_equal(tiny.read_checkpoint(str(folder / "ckpt-2"))[1], good)
    assert [int(r["step"]) for r in logged_rows(run)] == [1, 2, 3, 4]  # logged before the save failed
    trainer, result = tiny.run(run, 4, checkpoint_every=2, resume=True)  # after making room
    assert result["step"] == 4 and [int(r["step"]) for r in logged_rows(run)] == [1, 2, 3, 4]


def test_file_size_limit_during_a_checkpoint_is_one_error_line(tmp_path, subprocess_env):
    """A real write failing part way inside TensorFlow's checkpoint writer (RLIMIT_FSIZE: EFBIG, as a full disk
    gives ENOSPC), through the installed script: one error line naming the checkpoint; the state file's checkpoint
    still reads back."""
    run = tmp_path / "run"
    process = subprocess.Popen(train_cmd(tmp_path, run, "--steps", 10 ** 6, log_every=10 ** 6,
                                        sample_every=10 ** 6), env=subprocess_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run / "checkpoints" / "checkpoint").exists(), process)
        data_size = next((run / "checkpoints").glob("*.data-*")).stat().st_size
        limit = data_size // 2  # above every other file the run writes from now on, below a checkpoint's data
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2, err
    line = one_error_line(err)
    assert f"cannot write checkpoint {run / 'checkpoints' / 'ckpt-'}" in line and "File too large" in line, line
    latest = tf.train.latest_checkpoint(str(run / "checkpoints"))
    assert f"(latest: {os.path.basename(latest)})" in line
    reader = tf.train.load_checkpoint(latest)
    assert all(reader.get_tensor(key) is not None for key in reader.get_variable_to_dtype_map())
    failed = line.split("cannot write checkpoint ")[1].split(":")[0]
    assert not list((run / "checkpoints").glob(os.path.basename(failed) + "[._]*"))  # no partial files left
    assert not (run / ".lock").exists()


# --- non-finite weights ---------------------------------------------------------------------------------------------
@tf.custom_gradient
def _nan_gradient(x):
    return tf.identity(x), lambda dy: dy * np.nan


def _l1_with_nan_gradient(clear, dehazed):
    return tf.reduce_mean(tf.abs(_nan_gradient(dehazed) - clear), axis=[1, 2, 3])


def test_non_finite_weights_are_never_saved(tmp_path, tiny):
    """The loss stays finite (it is computed before the update) but the update makes the weights NaN: the
    checkpoint due at that step is refused and the previous one stays the latest."""
    import keras

    tiny.run(tmp_path, 2, checkpoint_every=1)
    _, good = tiny.read_checkpoint(str(tmp_path / "checkpoints" / "ckpt-2"))
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=3, decay_rate=0.9)  # as tiny's
    step = SupervisedStep(tiny.generator(), _l1_with_nan_gradient, keras.optimizers.Adam(schedule, beta_1=0.5))
    trainer = Trainer(step, tiny.data_fn(*tiny.make_data(), 2), tmp_path, batch_size=2, checkpoint_every=1,
                      log_every=1, verbose=0)
    with pytest.raises(NonFiniteLossError, match=r"weights became non-finite by step 3 \(losses were finite\); not "
                                                 r"saving. The last good checkpoint is kept \(.*ckpt-2\)"):
        trainer.fit(5, resume=True)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")
    assert not list((tmp_path / "checkpoints").glob("ckpt-3*"))
    tiny.assert_states_equal(tiny.read_checkpoint(str(tmp_path / "checkpoints" / "ckpt-2"))[1], good)
    assert not (tmp_path / ".lock").exists()  # the claim is given up on errors too
