"""Every script in benchmarks/ runs with ``--quick`` (tiny sizes, one repeat, seconds) and prints its table, so none
rots; every figure of the README's "Measured" table names the command that prints it."""
import concurrent.futures
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(path.name for path in (REPO / "benchmarks").glob("*.py") if not path.name.startswith("_"))
TEST = "test_benchmark_runs_quick_and_prints_a_table"


@pytest.fixture(scope="module")
def quick_runs(request, tmp_path_factory):
    """The ``--quick`` runs of the selected benchmarks, three at a time: each is mostly the start-up of Python and
    TensorFlow in its processes, which uses one core; the figures of a quick run mean nothing anyway."""
    selected = [item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", None) == TEST]

    def run(script):
        tmp = tmp_path_factory.mktemp(script.removesuffix(".py"))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp)}     # scratch runs land in tmp
        return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick"], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=600)

    pool = concurrent.futures.ThreadPoolExecutor(3)
    yield {script: pool.submit(run, script) for script in selected}
    pool.shutdown(wait=True)


@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_runs_quick_and_prints_a_table(script, quick_runs):
    done = quick_runs[script].result()
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if len(lines) == 1 and "nothing timed" in lines[0]:                   # data it needs is absent: it says so
        pytest.skip(lines[0])
    # a title, a header and at least one row of figures; a benchmark reports a failed configuration as a row
    assert len(lines) >= 3, done.stdout
    assert sum(bool(re.search(r"\d", line)) for line in lines[1:]) >= 2, done.stdout
    assert not [line for line in lines if re.search(r"\bfailed\b", line)], done.stdout


def _measured_rows():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Measured", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]           # skip header, rule
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_every_measured_figure_names_the_command_that_prints_it():
    """Each row of the README's "Measured" table: what | figure | command, where the command is a script of
    benchmarks/ with flags it takes, or an installed console script with its options."""
    rows = _measured_rows()
    assert len(rows) >= 10
    for what, figure, command in rows:
        assert re.search(r"\d", figure), (what, figure)
        commands = re.findall(r"`([^`]+)`", command)
        assert commands, f"row {what!r} names no command"
        for text in commands:
            words = text.split()
            if words[0] == "python":
                script = REPO / words[1]
                assert words[1].startswith("benchmarks/") and script.is_file(), text
                source = script.read_text()
            else:
                assert words[0] in ("tfdehaze-eval", "tfdehaze-dehaze", "tfdehaze-train"), text
                source = (REPO / "tfdehaze" / "cli" / f"{words[0].split('-')[1]}.py").read_text()
            for flag in (word for word in words if word.startswith("--")):
                assert f'"{flag}"' in source, f"{text}: {flag} is not an option of {words[0:2]}"
