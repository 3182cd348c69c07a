"""tfdehaze-dehaze: files and folders in, PNGs out, inputs never overwritten, clear errors."""
import numpy as np

from tfdehaze import metrics, physics
from tfdehaze.cli import dehaze as cli
from tfdehaze.data import io


def run(argv):
    """The command's exit code, whether it returns it or exits with it (argparse and user errors exit)."""
    try:
        return cli.main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def _hazy_scene(tmp_path, name="scene.png", size=64, seed=0):
    """A real photograph with known synthetic haze (so a correct dehazer must raise PSNR)."""
    import cv2
    import skimage.data

    clear = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    rows = np.linspace(0.35, 0.9, size, dtype=np.float32)[:, None, None]
    t = np.broadcast_to(rows, (size, size, 1))
    hazy = physics.haze(clear[None], t[None], np.full((1, 1, 1, 3), 0.9, np.float32)).numpy()[0]
    path = tmp_path / name
    io.write_image(path, hazy)
    return path, clear


def test_dcp_on_folder_and_file(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    a, clear = _hazy_scene(src, "a.png")
    b, _ = _hazy_scene(tmp_path, "b.png", seed=1)
    out = tmp_path / "out"
    assert run([str(src), str(b), "--out", str(out), "--save-transmission", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_transmission.png", "b.png", "b_transmission.png"]
    dehazed = io.read_image(out / "a.png")
    hazy = io.read_image(a)
    assert dehazed.shape == hazy.shape
    gain = metrics.psnr(dehazed[None], clear[None]).numpy()[0] - metrics.psnr(hazy[None], clear[None]).numpy()[0]
    assert gain > 1.0, f"dark-channel dehazing should raise PSNR, got {gain:.2f} dB"
    t = io.read_image(out / "a_transmission.png")
    assert t.shape[:2] == hazy.shape[:2]


def test_never_overwrites_an_input(tmp_path, capsys):
    a, _ = _hazy_scene(tmp_path, "a.png")
    before = a.read_bytes()
    assert run([str(a), "--out", str(tmp_path), "--quiet"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert a.read_bytes() == before


def test_bad_inputs_named(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    assert run([str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert run([str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run([str(empty), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "empty" in capsys.readouterr().err


def test_unknown_model_lists_names(tmp_path, capsys):
    a, _ = _hazy_scene(tmp_path, "a.png")
    assert run([str(a), "--out", str(tmp_path / "o"), "--model", "no-such-model", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "guided-pix2pix" in err


def test_minet_official_dehazes_real_sots_pairs(reference_dir, tmp_path, monkeypatch, capsys):
    """tfdehaze-dehaze --model minet-official on real SOTS-indoor pairs, with the authors' converted weights."""
    from tfdehaze import convert

    monkeypatch.setenv("TFDEHAZE_HOME", str(tmp_path / "home"))
    sots = reference_dir / "sots_indoor_sample"
    hazy = sorted((sots / "hazy").glob("*.png"))[:2]
    out = tmp_path / "out"
    assert run([*map(str, hazy), "--out", str(out), "--model", "minet-official", "--quiet"]) == 2
    assert "convert_minet.py" in capsys.readouterr().err      # no weights yet: says how to get them
    convert.convert_official_weights(reference_dir / "minet_official_its.pth")
    assert run([*map(str, hazy), "--out", str(out), "--model", "minet-official", "--quiet"]) == 0
    for h in hazy:
        clear = io.read_image(sots / "clear" / f"{h.stem.split('_')[0]}.png")
        got = metrics.psnr(io.read_image(out / h.name)[None], clear[None]).numpy()[0]
        before = metrics.psnr(io.read_image(h)[None], clear[None]).numpy()[0]
        assert got > 33.0 and got > before + 15.0, (h.name, before, got)


def test_two_outputs_never_share_a_file(tmp_path, capsys):
    """a.png's transmission map and a_transmission.png's dehazed image would both be o/a_transmission.png."""
    a, _ = _hazy_scene(tmp_path, "a.png")
    t, _ = _hazy_scene(tmp_path, "a_transmission.png")
    out = tmp_path / "o"
    assert run([str(a), str(t), "--out", str(out), "--save-transmission", "--quiet"]) == 2
    assert "would both be written to" in capsys.readouterr().err and not out.exists()
    assert run([str(a), str(t), "--out", str(out), "--quiet"]) == 0       # without transmission maps: no clash
