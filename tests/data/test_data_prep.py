"""data_prep/ scripts: manifests (with splits) from benchmark folders, and haze synthesis from clear images + depth."""
import pathlib

import cv2
import numpy as np
import pytest
from harness import data_prep_module

from tfdehaze.data import datasets, io

DATA_PREP = pathlib.Path(__file__).resolve().parents[2] / "data_prep"


script = data_prep_module


def write(folder, name, shape=(12, 12, 3), value=None, rng=None):
    folder.mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 256, shape, dtype=np.uint8) if value is None else np.full(shape, value, np.uint8)
    cv2.imwrite(str(folder / name), image)


def test_make_manifest_ohaze_ntire_split(tmp_path, rng):
    for i in range(1, 46):
        write(tmp_path / "O-HAZE" / "hazy", f"{i:02d}_outdoor_hazy.jpg", rng=rng)
        write(tmp_path / "O-HAZE" / "GT", f"{i:02d}_outdoor_GT.jpg", rng=rng)
    out = tmp_path / "O-HAZE" / "ohaze.csv"
    assert script("make_manifest").main(["--hazy", str(tmp_path / "O-HAZE" / "hazy"), "--clear",
                                         str(tmp_path / "O-HAZE" / "GT"), "--layout", "ohaze", "--split", "ntire",
                                         "--out", str(out)]) == 0
    parts = {n: datasets.read_manifest(out.with_name(f"ohaze_{n}.csv")) for n in ("train", "val", "test")}
    assert [len(parts[n]) for n in ("train", "val", "test")] == [35, 5, 5]
    assert parts["test"]["clear"].iloc[0].endswith("41_outdoor_GT.jpg")
    assert "hazy/01_outdoor_hazy.jpg" in out.with_name("ohaze_train.csv").read_text()


def test_make_manifest_its_and_errors(tmp_path, rng, capsys):
    for i in (1, 2, 3):
        write(tmp_path / "clear", f"{i}.png", rng=rng)
        for k in (1, 2):
            write(tmp_path / "hazy", f"{i}_{k}_0.8.png", rng=rng)
            write(tmp_path / "trans", f"{i}_{k}.png", shape=(12, 12), rng=rng)
    make = script("make_manifest")
    args = ["--hazy", str(tmp_path / "hazy"), "--clear", str(tmp_path / "clear"), "--trans", str(tmp_path / "trans"),
            "--layout", "its", "--out", str(tmp_path / "its.csv")]
    assert make.main(args) == 0
    df = datasets.read_manifest(tmp_path / "its.csv")
    assert len(df) == 6 and df["transmission"].str.endswith(("1_1.png", "1_2.png", "2_1.png", "2_2.png", "3_1.png",
                                                             "3_2.png")).all()
    (tmp_path / "hazy" / "2_2_0.8.png").write_bytes(b"garbage")
    (tmp_path / "its.csv").unlink()
    with pytest.raises(SystemExit) as exit_info:                            # a user error exits, one message
        make.main(args)
    assert exit_info.value.code == 2
    assert "2_2_0.8.png" in capsys.readouterr().err
    assert not (tmp_path / "its.csv").exists()  # nothing written when the dataset is bad


def test_synthesize_haze_with_depth(tmp_path, rng):
    depth = {}
    for name in ("a", "b"):
        write(tmp_path / "clear", f"{name}.png", shape=(16, 20, 3), rng=rng)
        depth[name] = rng.uniform(1, 10, (16, 20))
        (tmp_path / "depth").mkdir(exist_ok=True)
        np.save(tmp_path / "depth" / f"{name}.npy", depth[name])
    out = tmp_path / "out"
    assert script("synthesize_haze").main([str(tmp_path / "clear"), str(out), "--depth", str(tmp_path / "depth"),
                                           "--seed", "3"]) == 0
    df = datasets.read_manifest(out / "manifest.csv")
    assert len(df) == 2 and df["beta"].between(0.6, 1.8).all()
    for row in df.itertuples():
        name = pathlib.Path(row.hazy).stem
        t = io.read_image(row.transmission)
        expected = np.exp(-row.beta * depth[name] / depth[name].max())
        np.testing.assert_allclose(t[..., 0], expected, atol=0.5 / 255 + 1e-6)
        airlight = np.array([row.airlight_r, row.airlight_g, row.airlight_b])
        rebuilt = io.read_image(row.clear) * t + airlight * (1 - t)
        assert np.abs(rebuilt - io.read_image(row.hazy)).max() <= 1 / 255
    with pytest.raises(SystemExit):
        script("synthesize_haze").main(["--help"])
