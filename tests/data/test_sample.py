"""tfdehaze.data.sample: the bundled set is built once, holds what it promises, and obeys I = J t + A (1 - t)."""
import json
import os

import numpy as np
import pytest

from tfdehaze.data import datasets, io, sample


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return sample.sample_dir(tmp_path_factory.mktemp("cache") / "sample", size=64)


def test_files_and_manifest(built):
    df = datasets.read_manifest(built / "manifest.csv")
    assert list(df.columns) == ["hazy", "clear", "transmission", "airlight_r", "airlight_g", "airlight_b", "beta"]
    assert 8 <= len(df) <= 12
    for kind in ("hazy", "clear", "transmission"):
        assert sorted(os.listdir(built / kind)) == sorted(f"{name}.png" for name, _ in sample.SOURCES)
    assert "hazy/astronaut.png" in (built / "manifest.csv").read_text()  # relative: the folder can move
    checked = datasets.validate(df)
    assert set(zip(checked["height"], checked["width"])) == {(64, 64)}
    airlight = df[["airlight_r", "airlight_g", "airlight_b"]].to_numpy()
    assert ((0.7 <= airlight) & (airlight <= 1.0)).all() and df["beta"].between(0.6, 1.8).all()
    assert df["beta"].nunique() == len(df)  # drawn per image
    assert sorted(os.listdir(built.parent)) == ["sample"]  # no temporary build folder left behind


def test_scattering_model_reproduces_hazy(built):
    df = datasets.read_manifest(built / "manifest.csv")
    for row in df.itertuples():
        clear, hazy, trans = io.read_image(row.clear), io.read_image(row.hazy), io.read_image(row.transmission)
        airlight = np.array([row.airlight_r, row.airlight_g, row.airlight_b])
        rebuilt = clear * trans + airlight * (1 - trans)
        assert np.abs(rebuilt - hazy).max() <= 2 / 255, row.hazy
        assert np.abs(hazy - clear).mean() > 0.03  # there is haze
        t = trans[..., 0]
        assert t.std() > 0.01 and t.min() >= np.exp(-row.beta) - 1 / 255  # t = exp(-beta d), 0 < d <= 1
        assert np.ptp(trans, axis=-1).max() == 0  # one transmission for the three channels


def test_real_depth_for_the_motorcycle(built):
    """The motorcycle's transmission comes from the Middlebury disparity (sharp object edges), not a smooth ramp."""
    t = io.read_image(built / "transmission" / "motorcycle_left.png")[..., 0]
    ramp = io.read_image(built / "transmission" / "astronaut.png")[..., 0]
    assert np.abs(np.diff(t, axis=1)).max() > 4 * np.abs(np.diff(ramp, axis=1)).max()
    assert ramp[:8].mean() < ramp[-8:].mean()  # synthetic depth: far at the top -> less transmission


def test_built_once_then_reused(built):
    manifest = built / "manifest.csv"
    stamps = {p: p.stat().st_mtime_ns for p in [manifest, built / "hazy" / "coffee.png"]}
    assert sample.sample_dir(built, size=64) == built
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    with pytest.raises(ValueError, match="different sample set"):
        sample.sample_dir(built, size=32)


def test_deterministic_and_env_home(built, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDEHAZE_HOME", str(tmp_path))
    other = sample.sample_dir(size=64)
    assert other == tmp_path / "sample-64"
    assert json.loads((other / "sample.json").read_text())["size"] == 64
    for kind in ("hazy", "clear", "transmission"):
        for name in os.listdir(built / kind):
            assert (built / kind / name).read_bytes() == (other / kind / name).read_bytes()


def test_synthesize_set_checks_input(tmp_path, rng):
    with pytest.raises(ValueError, match="depth"):
        sample.synthesize_set(tmp_path, [("x", rng.random((8, 8, 3)), rng.random((4, 4)))])
    with pytest.raises(ValueError, match="airlight_range"):
        sample.synthesize_set(tmp_path, [("x", rng.random((8, 8, 3)), None)], airlight_range=(0.9, 0.7))
    depth = rng.random((8, 8))
    df = sample.synthesize_set(tmp_path / "s", [("x", rng.random((8, 8, 3)), depth)], beta_range=(1.0, 1.0))
    t = io.read_image(df["transmission"][0])[..., 0]
    np.testing.assert_allclose(t, np.exp(-depth), atol=0.5 / 255 + 1e-6)


def test_haze_is_synthesized_by_physics_haze(tmp_path, rng, monkeypatch):
    """One haze synthesis: the sample set and data_prep/synthesize_haze.py go through tfdehaze.physics.haze."""
    from tfdehaze import physics

    calls = []
    real = physics.haze
    monkeypatch.setattr(physics, "haze", lambda *a, **k: calls.append(k.get("dtype")) or real(*a, **k))
    clear, depth = rng.random((12, 10, 3)), rng.random((12, 10))
    df = sample.synthesize_set(tmp_path, [("x", clear, depth)])
    assert calls == ["float64"] and not hasattr(sample, "add_haze")
    row = df.iloc[0]
    clear8 = io.decode(row.clear).astype(np.float64) / 255
    trans8 = io.decode(row.transmission).astype(np.float64)[..., None] / 255
    airlight = np.array([row.airlight_r, row.airlight_g, row.airlight_b])
    expected = real(clear8, trans8, airlight, dtype="float64").numpy()
    np.testing.assert_array_equal(expected, clear8 * trans8 + airlight * (1.0 - trans8))  # float64, not rounded
    np.testing.assert_array_equal(io.decode(row.hazy), np.round(np.clip(expected, 0, 1) * 255))


def test_sample_pixels_are_those_of_the_cached_version(built):
    """Caches under $TFDEHAZE_HOME are reused as long as sample._VERSION is unchanged: the pixels must not move.

    If this fails on purpose (new sources, new synthesis), bump sample._VERSION and update the digest.
    """
    import hashlib

    digest = hashlib.sha256()
    for kind in ("hazy", "clear", "transmission"):
        for path in sorted((built / kind).glob("*.png")):
            digest.update(np.ascontiguousarray(io.decode(path)).tobytes())
    assert sample._VERSION == 1
    assert digest.hexdigest() == "2c22e4e77b99f9671108cb7abb1a7a2972630833b10862cf8d9a19ca1d403d1e"
