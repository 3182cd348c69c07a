"""Evaluation layouts (Dense-HAZE / NH-HAZE, SOTS-outdoor's larger ground truths, wrong layouts) and SSIM against
scikit-image on real pairs."""
import numpy as np
import pandas as pd
import pytest
from skimage.metrics import structural_similarity

from tfdehaze import evaluation, metrics
from tfdehaze.check import center_crop_to
from tfdehaze.data import datasets, io


def _write(path, image):
    io.write_image(path, image)
    return path


@pytest.mark.parametrize("layout", ["dense-haze", "nh-haze", "auto"])
def test_dense_and_nh_haze_layouts(tmp_path, layout):
    for i in (1, 2, 55):
        _write(tmp_path / "hazy" / f"{i:02d}_hazy.png", np.full((8, 8, 3), 0.7))
        _write(tmp_path / "GT" / f"{i:02d}_GT.png", np.full((8, 8, 3), 0.2))
    df = datasets.pair_folders(tmp_path / "hazy", tmp_path / "GT", layout=layout)
    assert [(p.split("/")[-1], c.split("/")[-1]) for p, c in zip(df["hazy"], df["clear"])] == [
        ("01_hazy.png", "01_GT.png"), ("02_hazy.png", "02_GT.png"), ("55_hazy.png", "55_GT.png")]


def test_wrong_layout_names_the_expected_layouts(tmp_path):
    _write(tmp_path / "hazy" / "1400_1.png", np.zeros((8, 8, 3)))
    _write(tmp_path / "clear" / "1400.png", np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"expected layout 'nh-haze': hazy/NN_hazy.png <-> clear/NN_GT.png"):
        datasets.pair_folders(tmp_path / "hazy", tmp_path / "clear", layout="nh-haze")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"folder holds no image files.*\n.*expected one of the layouts"):
        evaluation.load_datasets(data=[(tmp_path / "empty", tmp_path / "clear")])


def test_sots_outdoor_larger_ground_truth_is_centre_cropped(tmp_path, rng):
    clear = rng.uniform(size=(21, 26, 3)).astype(np.float32)        # GT 5 px taller and wider than the hazy image
    crop = center_crop_to(clear, 16, 20)
    _write(tmp_path / "outdoor" / "clear" / "0001.png", clear)
    _write(tmp_path / "outdoor" / "hazy" / "0001_0.8_0.2.jpg", crop)
    data = evaluation.load_datasets(data=[(tmp_path / "outdoor" / "hazy", tmp_path / "outdoor" / "clear")],
                                    layout="sots-outdoor")
    assert data[0][0] == "outdoor"
    identity = {"identity": lambda: (lambda x: {"dehazed": x})}
    result = evaluation.evaluate_methods(["identity"], data, tmp_path / "eval", progress=False, loaders=identity,
                                         grid_images=1)
    row = pd.read_csv(result["per_image"]).iloc[0]
    assert row["psnr"] > 30           # JPEG round-off only: aligned by the same crop as training
    assert (tmp_path / "eval" / "grid.png").is_file()


def test_ssim_matches_skimage_on_real_sots_pairs(reference_dir):
    sots = reference_dir / "sots_indoor_sample"
    df = datasets.pair_folders(sots / "hazy", sots / "clear", layout="sots-indoor").iloc[:3]
    for hazy_path, clear_path in zip(df["hazy"], df["clear"]):
        hazy = io.read_image(hazy_path)
        clear = center_crop_to(io.read_image(clear_path), *hazy.shape[:2])
        ours = float(metrics.ssim(hazy[None], clear[None])[0])
        reference = structural_similarity(hazy, clear, channel_axis=-1, data_range=1, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False)
        assert ours == pytest.approx(reference, abs=1e-3)
