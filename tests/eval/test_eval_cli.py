"""tfdehaze-eval as the installed console script on the 12 real SOTS-indoor pairs: the three files, the summary
recomputed from per_image.csv, MI-Net official's 38.2 dB, resume, and one-line errors with exit code 2."""
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

SCRIPT = shutil.which("tfdehaze-eval", path=str(pathlib.Path(sys.executable).parent)) or "tfdehaze-eval"


def run(args, env=None, check=True):
    proc = subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def home(reference_dir, tmp_path_factory):
    """A TFDEHAZE_HOME holding minet-official's converted weights."""
    from tfdehaze.convert import convert_official_weights

    home = tmp_path_factory.mktemp("home")
    convert_official_weights(reference_dir / "minet_official_its.pth",
                             home / "weights" / "minet_official_its.weights.h5")
    return home


def test_eval_sots_indoor_summary_and_resume(reference_dir, home, tmp_path):
    sots = reference_dir / "sots_indoor_sample"
    out = tmp_path / "eval"
    args = ["dcp", "minet-official", "--data", sots / "hazy", sots / "clear", "--out", out]
    env = {"TFDEHAZE_HOME": str(home)}
    first = run(args, env)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["grid.png", "per_image.csv", "summary.csv",
                                                                     "summary.md"]
    assert "scored 24 image(s), skipped 0" in first.stdout

    per_image = pd.read_csv(out / "per_image.csv")
    assert len(per_image) == 24 and set(per_image["method"]) == {"dcp", "minet-official"}
    assert (per_image["seconds"] > 0).all()
    summary = pd.read_csv(out / "summary.csv").set_index("method")
    ds = "sots_indoor_sample"
    for method, part in per_image.groupby("method"):
        for metric in ("psnr", "ssim"):
            name = metric.upper()
            assert summary.loc[method, f"{ds} {name} mean"] == pytest.approx(part[metric].mean(), abs=1e-6)
            assert summary.loc[method, f"{ds} {name} std"] == pytest.approx(part[metric].std(), abs=1e-6)
        assert summary.loc[method, f"{ds} n"] == 12
    hazy_rows = per_image[per_image["method"] == "dcp"]
    assert summary.loc["hazy input", f"{ds} PSNR mean"] == pytest.approx(hazy_rows["hazy_psnr"].mean(), abs=1e-6)
    assert summary.loc["minet-official", f"{ds} PSNR mean"] == pytest.approx(38.2, abs=0.05)
    assert summary.loc["hazy input", f"{ds} PSNR mean"] == pytest.approx(13.5, abs=0.05)
    md = (out / "summary.md").read_text()
    mean, std = per_image[per_image["method"] == "minet-official"]["psnr"].agg(["mean", "std"])
    assert f"| minet-official | {mean:.2f} ± {std:.2f} |" in md

    # a run killed after some images: drop three dcp rows; the rerun scores only those (minet is not reloaded)
    kept = per_image.drop(index=per_image.index[per_image["method"] == "dcp"][-3:])
    kept.to_csv(out / "per_image.csv", index=False)
    second = run(args, env)
    assert "scored 3 image(s), skipped 21" in second.stdout
    again = pd.read_csv(out / "per_image.csv")
    key = ["method", "image"]
    merged = per_image.merge(again, on=key, suffixes=("", "_again"))
    assert len(merged) == 24
    np.testing.assert_allclose(merged["psnr_again"], merged["psnr"], atol=1e-5)

    before = (out / "per_image.csv").read_bytes()
    start = time.perf_counter()
    third = run(args, env)
    assert "scored 0 image(s), skipped 24" in third.stdout
    assert (out / "per_image.csv").read_bytes() == before
    assert time.perf_counter() - start < 60


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    (tmp_path / "hazy").mkdir()
    (tmp_path / "clear").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "hazy" / "photo.png"), np.zeros((16, 16, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "clear" / "other.png"), np.zeros((16, 16, 3), np.uint8))
    proc = run(["dcp", "--data", tmp_path / "hazy", tmp_path / "clear", "--out", tmp_path / "o"], check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2
    assert last.startswith("tfdehaze-eval: error: 1 hazy file(s) without a partner")
    assert "photo.png" in last and "expected one of the layouts" in last and "'nh-haze'" in last
