"""tfdehaze.metrics: PSNR/SSIM against hand-computed values and scikit-image, evaluate() on generated files
(SOTS-outdoor-style larger ground truths, size errors, batching) and summarize()."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image
from skimage.metrics import structural_similarity

from tfdehaze import metrics

T, A = 0.6, 0.9  # the haze used to generate the test pairs


def test_psnr_of_known_mse():
    a = np.zeros((2, 8, 8, 3), np.float32)
    b = np.stack([np.full((8, 8, 3), 0.1), np.full((8, 8, 3), 0.01)]).astype(np.float32)
    np.testing.assert_allclose(metrics.psnr(a, b).numpy(), [20.0, 40.0], rtol=1e-5)  # 10 log10(1 / MSE)
    assert np.isinf(metrics.psnr(a, a).numpy()).all()


def test_psnr_random_matches_numpy(rng):
    a, b = rng.uniform(0, 1, (2, 2, 16, 16, 3)).astype(np.float32)
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(metrics.psnr(a, b).numpy(), 10 * np.log10(1 / mse), rtol=1e-5)


def test_ssim_by_hand_and_against_skimage(rng):
    image = rng.uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(metrics.ssim(image, image).numpy(), [1.0], atol=1e-6)
    # Two constant images: contrast/structure terms are 1, luminance = (2ab + C1) / (a^2 + b^2 + C1). Tolerance:
    # tf.image.ssim forms variances as E[x^2] - E[x]^2 in float32, ~1e-7 of round-off against C2 = 9e-4.
    a, b, c1 = 0.2, 0.7, 0.01 ** 2
    flat = np.full((1, 16, 16, 3), a, np.float32), np.full((1, 16, 16, 3), b, np.float32)
    np.testing.assert_allclose(metrics.ssim(*flat).numpy(), [(2 * a * b + c1) / (a * a + b * b + c1)], atol=1e-3)
    # Smooth random images against scikit-image's Gaussian-window SSIM (11 x 11, sigma 1.5, population covariance).
    x = tf.image.resize(rng.uniform(0, 1, (2, 8, 8, 3)), (48, 48)).numpy().astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    ours = metrics.ssim(x, y).numpy()
    reference = [structural_similarity(xi, yi, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False) for xi, yi in zip(x, y)]
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert 0.3 < ours.min() < ours.max() < 0.95  # a pair where the value means something


def test_metrics_reject_mismatched_or_tiny_images():
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 9, 3)))
    with pytest.raises(ValueError, match="11 x 11"):
        metrics.ssim(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))


def _save(path, array8):
    Image.fromarray(array8).save(path)
    return str(path)


def _make_pairs(tmp_path, rng):
    """Three pairs: clear 4 px larger (SOTS outdoor), 3 px larger (odd margin), same size; hazy = haze(centre crop)."""
    (tmp_path / "hazy").mkdir()
    (tmp_path / "clear").mkdir()
    rows, truth = [], {}
    for index, (extra, offset) in enumerate([(4, 2), (3, 2), (0, 0)]):  # offset = int(round(extra / 2))
        clear8 = rng.integers(0, 256, (32 + extra, 40 + extra, 3), dtype=np.uint8)
        crop = clear8[offset:offset + 32, offset:offset + 40].astype(np.float32) / 255
        hazy8 = np.round((crop * T + A * (1 - T)) * 255).astype(np.uint8)
        hazy = _save(tmp_path / "hazy" / f"{index:04d}_{A}_{T}.png", hazy8)
        rows.append((hazy, _save(tmp_path / "clear" / f"{index:04d}.png", clear8)))
        truth[hazy] = (hazy8.astype(np.float32) / 255, crop)
    return pd.DataFrame(rows, columns=["hazy", "clear"]), truth


def _numpy_psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))


def test_evaluate_rows_columns_and_crop(tmp_path, rng):
    pairs, truth = _make_pairs(tmp_path, rng)

    def invert(batch):  # the oracle: undo the known haze, returned the way models do (a dict)
        return {"dehazed": (batch - A) / T + A}

    df = metrics.evaluate(invert, pairs, name="oracle", dataset="toy")
    assert list(df.columns) == ["dataset", "method", "image", "hazy", "clear", "psnr", "ssim", "hazy_psnr",
                                "hazy_ssim"]
    assert len(df) == 3 and list(df["hazy"]) == list(pairs["hazy"]) and list(df["clear"]) == list(pairs["clear"])
    assert list(df["image"]) == [f"{i:04d}_{A}_{T}.png" for i in range(3)]
    assert set(df["dataset"]) == {"toy"} and set(df["method"]) == {"oracle"}
    for row in df.itertuples():
        hazy, crop = truth[row.hazy]
        # Exact values prove the clear image was centre-cropped with the documented offsets.
        np.testing.assert_allclose(row.hazy_psnr, _numpy_psnr(hazy, crop), rtol=1e-4)
        np.testing.assert_allclose(row.psnr, _numpy_psnr(np.clip((hazy - A) / T + A, 0, 1), crop), rtol=1e-4)
        assert row.psnr > 40 > row.hazy_psnr + 10
        assert row.ssim > 0.99 > row.hazy_ssim


def test_evaluate_identity_batching_and_resize(tmp_path, rng):
    pairs, _ = _make_pairs(tmp_path, rng)
    seen = []

    def identity(batch):
        seen.append(tuple(batch.shape))
        return batch

    df = metrics.evaluate(identity, pairs, batch_size=2)
    assert seen == [(2, 32, 40, 3), (1, 32, 40, 3)]
    assert set(df["method"]) == {"identity"}
    np.testing.assert_allclose(df["psnr"], df["hazy_psnr"], rtol=1e-6)
    np.testing.assert_allclose(df["ssim"], df["hazy_ssim"], rtol=1e-6)
    single = metrics.evaluate(identity, pairs)
    np.testing.assert_allclose(single["psnr"], df["psnr"], rtol=1e-6)
    seen.clear()
    small = metrics.evaluate(identity, pairs, image_size=(16, 20))
    assert seen == [(1, 16, 20, 3)] * 3 and len(small) == 3


def test_evaluate_errors_name_the_files(tmp_path, rng):
    hazy = _save(tmp_path / "big_hazy.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    clear = _save(tmp_path / "small_clear.png", rng.integers(0, 256, (40, 36, 3), dtype=np.uint8))
    pairs = pd.DataFrame({"hazy": [hazy], "clear": [clear]})
    with pytest.raises(ValueError, match=r"big_hazy\.png.*larger.*small_clear\.png"):
        metrics.evaluate(lambda x: x, pairs)
    same = pd.DataFrame({"hazy": [hazy], "clear": [hazy]})
    with pytest.raises(ValueError, match=r"returned shape .*big_hazy\.png"):
        metrics.evaluate(lambda x: x[:, :8], same)
    with pytest.raises(ValueError, match="missing"):
        metrics.evaluate(lambda x: x, pd.DataFrame({"hazy": [hazy]}))


def test_summarize_mean_and_std():
    df = pd.DataFrame({
        "dataset": ["a", "a", "a", "b"], "method": ["m"] * 4,
        "psnr": [20.0, 22.0, 27.0, 30.0], "ssim": [0.5, 0.7, 0.9, 0.8],
        "hazy_psnr": [10.0, 11.0, 12.0, 13.0], "hazy_ssim": [0.1, 0.2, 0.3, 0.4]})
    table = metrics.summarize(df)
    assert list(table["dataset"]) == ["a", "b"] and list(table["n"]) == [3, 1]
    np.testing.assert_allclose(table.loc[0, "psnr_mean"], 23.0)
    np.testing.assert_allclose(table.loc[0, "psnr_std"], np.std([20.0, 22.0, 27.0], ddof=1))
    np.testing.assert_allclose(table.loc[0, "ssim_mean"], 0.7)
    np.testing.assert_allclose(table.loc[0, "hazy_ssim_std"], 0.1)
    assert np.isnan(table.loc[1, "psnr_std"])  # one image: no spread
