"""Console scripts as users run them: a bad argument is one line on stderr, at once (arguments are parsed before
TensorFlow is imported); a successful run prints no TensorFlow/Abseil start-up noise; a ``TF_CPP_MIN_LOG_LEVEL`` the
user sets is respected. The scripts run as installed, in subprocesses, with the user's environment (no
``TF_CPP_MIN_LOG_LEVEL`` unless a test sets it)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from harness import script
from PIL import Image

from tfdehaze.cli import tf_log


def user_env(**changes):
    """os.environ without the test suite's TF_CPP_MIN_LOG_LEVEL, plus ``changes``."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(changes)
    return env


def run(name, args, timeout=120, cwd=None, **env):
    return subprocess.run([script(name), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=user_env(**env), cwd=cwd)


def imported_modules(importtime_stderr):
    """Module names from ``PYTHONPROFILEIMPORTTIME=1`` output ("import time: self | cumulative | name")."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / "a.png")
    (root / "flip.json").write_text(json.dumps({"flip": "yes"}))
    (root / "decay.json").write_text(json.dumps({"lr_schedule": {"kind": "exponential", "decay_steps": 10,
                                                                 "decay_rate": "x"}}))
    (root / "folder.json").mkdir()
    return root


BAD_ARGUMENTS = [
    ("tfdehaze-train", ["minet", "--bogus"], "unrecognized arguments: --bogus"),
    ("tfdehaze-train", ["pix3pix"], "argument MODEL: no training recipe named 'pix3pix'"),
    ("tfdehaze-train", ["minet", "--steps", "0"], "argument --steps: recipe field steps must be a positive integer"),
    ("tfdehaze-train", ["minet", "--batch-size", "2.5"], "argument --batch-size: invalid int value: '2.5'"),
    ("tfdehaze-train", ["minet", "--distribute", "tpu"], "argument --distribute: invalid choice: 'tpu'"),
    ("tfdehaze-train", ["minet", "--config", "{root}/flip.json"],
     'config file {root}/flip.json: recipe field flip must be true or false, got "yes"'),
    ("tfdehaze-train", ["minet", "--config", "{root}/decay.json"],
     'config file {root}/decay.json: recipe field lr_schedule.decay_rate must be a number in (0, 1], got "x"'),
    ("tfdehaze-train", ["minet", "--config", "{root}/folder.json"],
     "config file {root}/folder.json is a folder, not a JSON file"),
    ("tfdehaze-train", ["minet", "--data", "{root}", "{root}/a.png"],
     "data folder {root}/a.png is a file, not a folder of clear images"),
    ("tfdehaze-dehaze", ["{root}/a.png", "--out", "{root}/out", "--bogus"], "unrecognized arguments: --bogus"),
    ("tfdehaze-dehaze", ["{root}/a.png", "--tile", "x"], "argument --tile: invalid int value: 'x'"),
    ("tfdehaze-eval", ["dcp", "--out", "{root}/eval"], "give --manifest CSV or --data HAZY CLEAR"),
    ("tfdehaze-eval", ["dcp", "--data", "{root}", "{root}", "--out", "{root}/eval", "--image-size", "3"],
     "--image-size must be >= 11, got 3"),
    ("tfdehaze-export", ["{root}", "--version", "one", "--out", "{root}/export"],
     "argument --version: invalid int value: 'one'"),
    ("tfdehaze-serve", ["{root}", "--port", "http"], "argument --port: invalid int value: 'http'"),
]


@pytest.mark.parametrize("name, args, message", BAD_ARGUMENTS,
                         ids=[f"{n}-{' '.join(a)}" for n, a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_is_one_line_without_tensorflow(files, name, args, message):
    args = [a.format(root=files) for a in args]
    done = run(name, args, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # nothing before or after the error
    assert lines[0].startswith(f"{name}: error: ") and message.format(root=files) in lines[0], lines[0]
    # fast: the error comes before TensorFlow (or Keras) is imported
    profiled = run(name, args, timeout=60, PYTHONPROFILEIMPORTTIME="1")
    assert profiled.returncode == 2
    heavy = sorted(m for m in imported_modules(profiled.stderr) if m.split(".")[0] in ("tensorflow", "keras"))
    assert not heavy, heavy[:5]


def test_a_successful_dehaze_prints_no_tensorflow_noise(files, tmp_path):
    done = run("tfdehaze-dehaze", [files / "a.png", "--out", tmp_path, "--quiet"], timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no oneDNN / CUDA-stub / "absl::InitializeLog()" lines
    assert done.stdout == f"wrote 1 file(s) to {tmp_path}\n"
    assert (tmp_path / "a.png").is_file()


def test_a_successful_tiny_training_run_prints_no_tensorflow_noise(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model_kwargs": {"filters": 4, "steps": 1}, "image_size": 32, "batch_size": 2,
                                  "checkpoint_every": 2, "log_every": 1, "sample_every": 2}))
    done = run("tfdehaze-train", ["minet", "--steps", "2", "--config", config, "--out", tmp_path / "run", "--quiet"],
               timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "Run directory:" in done.stdout


def test_a_log_level_the_user_sets_is_respected():
    """TF_CPP_MIN_LOG_LEVEL=0: every start-up line TensorFlow prints on this machine is shown (none is filtered)."""
    baseline = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, timeout=300,
                              env=user_env(TF_CPP_MIN_LOG_LEVEL="0"))
    records = [line for line in baseline.stderr.splitlines(keepends=True) if tf_log._RECORD.match(line)]
    # where each record comes from ("port.cc:153]"), which does not change from run to run
    sources = {line.split(b"]", 1)[0].rsplit(b" ", 1)[1] for line in records}
    done = run("tfdehaze-dehaze", ["--list-models"], timeout=300, TF_CPP_MIN_LOG_LEVEL="0")
    assert done.returncode == 0, done.stderr
    missing = [s.decode() for s in sources if s.decode() not in done.stderr]
    assert not missing, done.stderr
    if b"absl::InitializeLog()" in baseline.stderr:
        assert "absl::InitializeLog()" in done.stderr


# --- the filter itself, around a stand-in "tensorflow" package that prints like TensorFlow 2.21 (fast) ---------

FAKE_TENSORFLOW = r'''
import os, sys
for line in (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             b"I0000 00:00:1796213616.698240    4702 port.cc:153] oneDNN custom operations are on.",
             b"W0000 00:00:1796213616.698540    4702 x.cc:1] a warning record",
             b"E0000 00:00:1796213616.698940    4702 y.cc:2] an error record"):
    os.write(2, line + b"\n")
print("a Python warning", file=sys.stderr, flush=True)
if os.environ.get("FAKE_TF_ABORT"):
    os.write(2, b"F0000 00:00:1796213616.70    4702 cpu_feature_guard.cc:9] compiled for AVX, not available\n")
    os.abort()
'''


@pytest.fixture
def fake_tensorflow(tmp_path):
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    return tmp_path


def import_through_cli(fake_tensorflow, **env):
    code = "import tfdehaze.cli as cli; cli.quiet_tensorflow(); print('imported')"
    env = user_env(PYTHONPATH=os.pathsep.join([str(fake_tensorflow), os.environ.get("PYTHONPATH", "")]), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("level, shown", [
    (None, ["a Python warning"]),   # the commands' default, 3
    ("2", ["E0000", "a Python warning"]),
    ("1", ["W0000", "E0000", "a Python warning"]),
    ("0", ["absl::InitializeLog()", "I0000", "W0000", "E0000", "a Python warning"]),
])
def test_start_up_records_are_filtered_by_the_log_level(fake_tensorflow, level, shown):
    done = import_through_cli(fake_tensorflow, **({"TF_CPP_MIN_LOG_LEVEL": level} if level else {}))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "imported\n"
    assert [next(w for w in shown if w in line) for line in done.stderr.splitlines()] == shown, done.stderr


def test_what_the_filter_passes_survives_a_crash_during_the_import(fake_tensorflow):
    """A FATAL record and a Python line printed just before TensorFlow aborts the process still reach stderr."""
    done = import_through_cli(fake_tensorflow, FAKE_TF_ABORT="1")
    assert done.returncode != 0 and done.stdout == ""
    assert "a Python warning" in done.stderr and "compiled for AVX, not available" in done.stderr
    assert "I0000" not in done.stderr and "absl::InitializeLog()" not in done.stderr
