"""tfdehaze.data.pipeline: pairs stay aligned through resize/crop/flip, decoding matches read_image, runs reproduce,
bad files are named before TensorFlow sees them, and the iterator checkpoints."""
import cv2
import numpy as np
import pandas as pd
import PIL.Image
import pytest
import tensorflow as tf

from tfdehaze.data import datasets, io, pipeline


def smooth_random(rng, h, w):
    """Spatially varying (no two windows alike) but not white noise, so resizing keeps structure."""
    noise = rng.random((h // 4 + 2, w // 4 + 2, 3))
    return (np.clip(cv2.resize(noise, (w, h)) + 0.15 * rng.random((h, w, 3)), 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def inverse_pairs(tmp_path, rng):
    """clear = 255 - hazy and transmission = hazy's red channel, at several sizes: any misalignment shows."""
    rows = []
    for i, (h, w) in enumerate([(40, 56), (48, 48), (36, 44), (52, 40), (44, 60)]):
        hazy = smooth_random(rng, h, w)
        row = {}
        for kind, image in (("hazy", hazy), ("clear", 255 - hazy), ("transmission", hazy[..., 0])):
            path = tmp_path / kind / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            PIL.Image.fromarray(image).save(path)
            row[kind] = str(path)
        rows.append(row)
    return pd.DataFrame(rows)


def take(ds, n=None):
    return [{k: v.numpy() for k, v in batch.items()} for batch in (ds.take(n) if n else ds)]


def test_pairs_and_transmission_stay_aligned(inverse_pairs):
    ds = pipeline.paired_dataset(inverse_pairs, image_size=32, crop_size=20, flip=True, batch_size=3, repeat=True,
                                 with_transmission=True, seed=3)
    assert ds.element_spec["hazy"].shape == (3, 20, 20, 3)
    assert ds.element_spec["transmission"].shape == (3, 20, 20, 1)
    batches = take(ds, 12)
    for b in batches:
        np.testing.assert_allclose(b["hazy"] + b["clear"], 1.0, atol=2e-6)
        np.testing.assert_allclose(b["transmission"], b["hazy"][..., :1], atol=2e-6)
    crops = np.concatenate([b["hazy"] for b in batches])
    assert len({c.tobytes() for c in crops}) == len(crops)  # crops/flips differ between elements


def test_crop_and_flip_are_windows_of_the_original(inverse_pairs):
    ds = pipeline.paired_dataset(inverse_pairs.iloc[[1]], image_size=None, crop_size=16, flip=True, repeat=True,
                                 seed=5, with_transmission=True)
    original = io.read_image(inverse_pairs["hazy"][1])
    seen = set()
    for b in take(ds, 24):
        crop = b["hazy"][0]
        matches = [(y, x, f) for f in (False, True) for y in range(48 - 15) for x in range(48 - 15)
                   if np.allclose((original[:, ::-1] if f else original)[y:y + 16, x:x + 16], crop, atol=1e-6)]
        assert len(matches) == 1
        seen.add(matches[0])
        np.testing.assert_allclose(b["clear"][0], 1 - crop, atol=1e-6)
    assert len(seen) > 12 and {f for _, _, f in seen} == {False, True}


def test_decode_matches_read_image(tmp_path, rng):
    images = {
        "gray.png": rng.integers(0, 256, (20, 24), dtype=np.uint8),
        "rgba.png": rng.integers(0, 256, (20, 24, 4), dtype=np.uint8),
        "rgb16.png": rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16),
        "gray16.png": rng.integers(0, 65536, (20, 24), dtype=np.uint16),
        "photo.jpg": smooth_random(rng, 20, 24),
        "photo.bmp": smooth_random(rng, 20, 24),
    }
    for name, image in images.items():
        if image.dtype == np.uint16:
            cv2.imwrite(str(tmp_path / name), image[..., ::-1] if image.ndim == 3 else image)
        else:
            PIL.Image.fromarray(image).save(tmp_path / name, **({"quality": 80} if name.endswith("jpg") else {}))
    paths = [tmp_path / n for n in images]
    for batch, path in zip(take(pipeline.image_dataset(paths)), paths):
        assert batch["path"][0].decode() == str(path)
        np.testing.assert_allclose(batch["image"][0], io.read_image(path), atol=1e-6, err_msg=path.name)
    np.testing.assert_allclose(io.read_image(tmp_path / "rgb16.png"), images["rgb16.png"] / 65535, atol=1e-7)
    df = pd.DataFrame({"hazy": list(map(str, paths)), "clear": list(map(str, paths[::-1]))})
    batches = take(pipeline.paired_dataset(df, image_size=None, flip=False, shuffle=False))
    for b, h, c in zip(batches, df["hazy"], df["clear"]):
        np.testing.assert_allclose(b["hazy"][0], io.read_image(h), atol=1e-6)
        np.testing.assert_allclose(b["clear"][0], io.read_image(c), atol=1e-6)


def test_resize_matches_tf_image_resize(inverse_pairs):
    out = take(pipeline.paired_dataset(inverse_pairs, image_size=24, flip=False, shuffle=False))
    for b, path in zip(out, inverse_pairs["hazy"]):
        expected = tf.image.resize(io.read_image(path), [24, 24], antialias=True).numpy()
        np.testing.assert_allclose(b["hazy"][0], expected, atol=1e-6)


def test_reproducible_and_seeded(inverse_pairs):
    def run(seed):
        ds = pipeline.paired_dataset(inverse_pairs, image_size=32, crop_size=16, batch_size=2, repeat=True, seed=seed)
        return np.concatenate([b["hazy"] for b in take(ds, 6)])
    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))


def test_epochs_and_batches(inverse_pairs):
    ds = pipeline.paired_dataset(inverse_pairs, image_size=16, flip=False, batch_size=2)
    batches = take(ds)
    assert [len(b["hazy"]) for b in batches] == [2, 2, 1]  # evaluation keeps the remainder
    means = sorted(round(float(x.mean()), 4) for b in batches for x in b["hazy"])
    expected = sorted(round(float(tf.image.resize(io.read_image(p), [16, 16], antialias=True).numpy().mean()), 4)
                      for p in inverse_pairs["hazy"])
    assert means == expected  # each pair exactly once per epoch
    repeated = pipeline.paired_dataset(inverse_pairs, image_size=16, batch_size=2, repeat=True)
    assert repeated.element_spec["hazy"].shape == (2, 16, 16, 3)  # static batch when repeating


def test_larger_clear_is_centre_cropped(tmp_path, rng):
    hazy = smooth_random(rng, 20, 30)
    clear = rng.integers(0, 256, (26, 34, 3), dtype=np.uint8)
    clear[3:23, 2:32] = 255 - hazy
    PIL.Image.fromarray(hazy).save(tmp_path / "0001_0.8_0.2.jpg", quality=100)
    PIL.Image.fromarray(clear).save(tmp_path / "0001.png")
    df = pd.DataFrame({"hazy": [str(tmp_path / "0001_0.8_0.2.jpg")], "clear": [str(tmp_path / "0001.png")]})
    b = take(pipeline.paired_dataset(df, image_size=None, flip=False))[0]
    assert b["clear"].shape == (1, 20, 30, 3)
    np.testing.assert_allclose(b["clear"][0], 1 - hazy / 255, atol=1e-6)


def test_pipeline_and_metrics_crop_the_same_pixels(tmp_path, rng):
    """A 7x9 ground truth for a 4x6 hazy image (odd margins): training and evaluation see the same clear pixels."""
    from tfdehaze import metrics

    hazy, clear = tmp_path / "hazy.png", tmp_path / "clear.png"
    PIL.Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).save(hazy)
    PIL.Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)).save(clear)
    df = pd.DataFrame({"hazy": [str(hazy)], "clear": [str(clear)]})
    trained = take(pipeline.paired_dataset(df, image_size=None, flip=False, shuffle=False))[0]["clear"][0]
    evaluated = metrics.center_crop_to(io.read_image(clear), io.read_image(hazy), str(clear), str(hazy))
    np.testing.assert_array_equal(trained, evaluated)
    np.testing.assert_array_equal(trained, io.read_image(clear)[2:6, 2:8])  # round(3 / 2) = 2, half to even


def test_pipeline_reads_every_format_read_image_reads(tmp_path, rng):
    """One list of formats (io.IMAGE_EXTENSIONS); TIFF, 8/16-bit, RGB and gray, decodes as io.read_image does."""
    assert not hasattr(pipeline, "PIPELINE_EXTENSIONS")
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} == set(io.IMAGE_EXTENSIONS)
    hazy, clear = tmp_path / "hazy.tif", tmp_path / "clear.tiff"
    PIL.Image.fromarray(smooth_random(rng, 20, 24)).save(hazy)
    cv2.imwrite(str(clear), rng.integers(0, 65536, (22, 26, 3), dtype=np.uint16))  # 16-bit, larger: cropped
    gray = tmp_path / "gray.tif"
    cv2.imwrite(str(gray), rng.integers(0, 65536, (20, 24), dtype=np.uint16))
    df = pd.DataFrame({"hazy": [str(hazy)] * 2, "clear": [str(clear), str(gray)]})
    batches = take(pipeline.paired_dataset(df, image_size=None, flip=False, shuffle=False))
    np.testing.assert_array_equal(batches[0]["hazy"][0], io.read_image(hazy))
    np.testing.assert_array_equal(batches[0]["clear"][0], io.read_image(clear)[1:21, 1:25])
    np.testing.assert_array_equal(batches[1]["clear"][0], io.read_image(gray))
    for ext in io.IMAGE_EXTENSIONS:  # every listed format passes the pipeline's own check and decodes the same
        path = tmp_path / f"photo{ext}"
        PIL.Image.fromarray(smooth_random(rng, 12, 10)).save(path, **({"quality": 90} if "jp" in ext else {}))
        image = take(pipeline.image_dataset([path]))[0]["image"][0]
        np.testing.assert_array_equal(image, io.read_image(path), err_msg=ext)
    iterator = iter(pipeline.paired_dataset(df, image_size=None, repeat=True, seed=1))  # TIFF still checkpoints
    next(iterator)
    saved = tf.train.Checkpoint(iterator=iterator).save(str(tmp_path / "ckpt"))
    after = next(iterator)["clear"].numpy()
    fresh = iter(pipeline.paired_dataset(df, image_size=None, repeat=True, seed=1))
    tf.train.Checkpoint(iterator=fresh).restore(saved).assert_consumed()
    np.testing.assert_array_equal(next(fresh)["clear"].numpy(), after)


def test_bad_input_is_named_before_tensorflow(inverse_pairs, tmp_path, rng):
    bad = inverse_pairs.copy()
    bad.loc[2, "clear"] = str(tmp_path / "corrupt.png")
    (tmp_path / "corrupt.png").write_bytes(rng.bytes(100))
    with pytest.raises(ValueError, match="1 problem") as err:
        pipeline.paired_dataset(bad)
    assert str(tmp_path / "corrupt.png") in str(err.value)
    gif = tmp_path / "x.gif"  # a format io.read_image does not promise: refused by name, before TensorFlow
    PIL.Image.fromarray(smooth_random(rng, 8, 8)).save(gif)
    with pytest.raises(ValueError, match="x.gif"):
        pipeline.paired_dataset(pd.DataFrame({"hazy": [str(gif)], "clear": [str(gif)]}))
    with pytest.raises(ValueError, match="transmission"):
        pipeline.paired_dataset(inverse_pairs[["hazy", "clear"]], with_transmission=True)
    with pytest.raises(ValueError, match="crop_size=64 is larger than image_size=32"):
        pipeline.paired_dataset(inverse_pairs, image_size=32, crop_size=64)
    with pytest.raises(ValueError, match="one size"):
        pipeline.paired_dataset(inverse_pairs, image_size=None, batch_size=2)
    with pytest.raises(ValueError, match=r"crop_size=42 is larger than 3 image") as err:
        pipeline.paired_dataset(inverse_pairs, image_size=None, crop_size=42, validate=False)
    assert "2.png (36x44)" in str(err.value) and "1.png" not in str(err.value)


def test_manifest_path_and_three_channel_transmission(inverse_pairs, tmp_path):
    datasets.write_manifest(inverse_pairs, tmp_path / "m.csv")
    ds = pipeline.paired_dataset(tmp_path / "m.csv", image_size=16, with_transmission=True, transmission_channels=3)
    for b in take(ds):
        assert b["transmission"].shape[-1] == 3
        np.testing.assert_allclose(b["transmission"], np.repeat(b["hazy"][..., :1], 3, -1), atol=2e-6)


def test_iterator_checkpoint_resumes_exactly(inverse_pairs, tmp_path):
    def make():
        return pipeline.paired_dataset(inverse_pairs, image_size=32, crop_size=16, batch_size=2, repeat=True, seed=7,
                                       with_transmission=True)
    iterator = iter(make())
    for _ in range(3):
        next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).save(str(tmp_path / "ckpt"))
    after = [next(iterator)["hazy"].numpy() for _ in range(4)]
    fresh = iter(make())  # a new process would rebuild the dataset and restore the iterator
    tf.train.Checkpoint(iterator=fresh).restore(path).assert_consumed()
    resumed = [next(fresh)["hazy"].numpy() for _ in range(4)]
    for a, r in zip(after, resumed):
        np.testing.assert_array_equal(a, r)
    assert not np.array_equal(after[0], next(iter(make()))["hazy"].numpy())


def test_reference_sots_pairs(reference_dir):
    root = reference_dir / "sots_indoor_sample"
    df = datasets.pair_folders(root / "hazy", root / "clear", layout="sots-indoor")
    b = take(pipeline.paired_dataset(df, image_size=64, batch_size=4, shuffle=False, flip=False), 1)[0]
    assert b["hazy"].shape == (4, 64, 64, 3) and b["clear"].shape == (4, 64, 64, 3)
    expected = tf.image.resize(io.read_image(df["hazy"][0]), [64, 64], antialias=True).numpy()
    np.testing.assert_allclose(b["hazy"][0], expected, atol=1e-6)
    assert np.abs(b["hazy"] - b["clear"]).mean() > 0.05  # real haze, not the same picture twice
