"""Tests on real data (the ``reference_dir`` fixture of tests/conftest.py) skip, saying how to provide the data,
when the reference folder is absent or incomplete: a checkout without ../shared/reference must pass."""
import os
import pathlib
import subprocess
import sys

TESTS = pathlib.Path(__file__).resolve().parent

# A pytest plugin that keeps only the tests asking for the fixture (directly or through another fixture).
PLUGIN = '''
def pytest_collection_modifyitems(config, items):
    keep = [item for item in items if "reference_dir" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep
'''


def _reference_test_files():
    return sorted(str(path) for path in TESTS.rglob("test_*.py")
                  if path.name != pathlib.Path(__file__).name and "reference_dir" in path.read_text())


def _run(reference, tmp_path):
    (tmp_path / "only_reference_tests.py").write_text(PLUGIN)
    env = {**os.environ, "TFDEHAZE_REFERENCE": str(reference), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "-p", "only_reference_tests", "--rootdir", str(TESTS.parent), *_reference_test_files()],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600)


def test_reference_tests_skip_with_instructions_when_the_data_is_incomplete(tmp_path):
    """A folder holding only the photograph (not the checkpoint nor the SOTS pairs): every test that uses real data
    skips (none fails or errors), and the reason names what is missing and how to provide it."""
    partial = tmp_path / "reference"
    (partial / "sots_indoor_sample" / "hazy").mkdir(parents=True)           # a folder without its images
    (partial / "hazy_flower.jpg").write_bytes(b"never read: the tests skip first")
    done = _run(partial, tmp_path)
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0 and "skipped" in summary, done.stdout[-3000:] + done.stderr[-2000:]
    assert not any(word in summary for word in ("passed", "failed", "error")), summary
    reasons = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(reasons) >= 10, done.stdout[-3000:]           # the files using real data, found by their fixture
    for line in reasons:
        assert f"{partial} lacks minet_official_its.pth, sots_indoor_sample/hazy/*.png" in line, line
        assert "TFDEHAZE_REFERENCE" in line and "../shared/reference/" in line, line
