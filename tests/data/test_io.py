"""tfdehaze.data.io: every bit depth / channel layout to float RGB, errors naming the file, atomic writes."""
import cv2
import numpy as np
import PIL.Image
import pytest

from tfdehaze.data import io


def gradient(h=24, w=32):
    """An RGB uint8 image whose three channels differ (a channel swap or flip cannot go unnoticed)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], -1).astype(np.uint8)


def test_gray_png_becomes_rgb(tmp_path, rng):
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    PIL.Image.fromarray(gray).save(tmp_path / "g.png")
    image = io.read_image(tmp_path / "g.png")
    assert image.shape == (20, 30, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, np.repeat(gray[..., None], 3, -1) / 255, atol=1e-7)


def test_rgba_png_drops_alpha(tmp_path, rng):
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    PIL.Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(io.read_image(tmp_path / "a.png"), rgba[..., :3] / 255, atol=1e-7)


def test_16bit_png_scaled_by_65535(tmp_path, rng):
    rgb16 = rng.integers(0, 65536, (12, 14, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    gray16 = rng.integers(0, 65536, (12, 14), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    np.testing.assert_allclose(io.read_image(tmp_path / "c16.png"), rgb16 / 65535, atol=1e-7)
    np.testing.assert_allclose(io.read_image(tmp_path / "g16.png"), np.repeat(gray16[..., None] / 65535, 3, -1),
                               atol=1e-7)
    # 16-bit precision is kept, not reduced to 8 bits
    assert np.abs(io.read_image(tmp_path / "c16.png") * 255 - np.round(rgb16 / 257)).max() > 0.01


def test_jpeg_bmp_tiff(tmp_path):
    rgb = gradient()
    PIL.Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=98, subsampling=0)
    PIL.Image.fromarray(rgb).save(tmp_path / "x.bmp")
    PIL.Image.fromarray(rgb).save(tmp_path / "x.tif")
    jpeg = io.read_image(tmp_path / "x.jpg")
    assert jpeg.shape == (24, 32, 3)
    assert np.abs(jpeg - rgb / 255).max() < 6 / 255  # JPEG loss only, channels in RGB order
    np.testing.assert_allclose(jpeg, np.asarray(PIL.Image.open(tmp_path / "x.jpg")) / 255, atol=1.5 / 255)
    np.testing.assert_allclose(io.read_image(tmp_path / "x.bmp"), rgb / 255, atol=1e-7)
    np.testing.assert_allclose(io.read_image(tmp_path / "x.tif"), rgb / 255, atol=1e-7)


def _png_bytes(rng):
    ok, data = cv2.imencode(".png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return data.tobytes()


@pytest.mark.parametrize("name, content, reason", [
    ("random.png", lambda rng: rng.bytes(300), "not an image"),
    ("truncated.png", lambda rng: _png_bytes(rng)[:1500], "truncated"),
    ("text.jpg", lambda rng: b"this is not a JPEG\n" * 5, "not an image"),
    ("empty.png", lambda rng: b"", "empty"),
])
def test_bad_files_name_the_file_and_reason(tmp_path, rng, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content(rng))
    with pytest.raises(io.ImageError, match=reason) as err:
        io.read_image(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(io.ImageError, match="no such file") as err:
        io.read_image(tmp_path / "nope.png")
    assert str(tmp_path / "nope.png") in str(err.value)
    with pytest.raises(io.ImageError, match="folder"):
        io.read_image(tmp_path)


def test_write_image_round_trip_atomic(tmp_path, rng):
    image = rng.random((10, 12, 3)).astype(np.float32)
    path = tmp_path / "new" / "sub" / "out.png"
    io.write_image(path, image)
    np.testing.assert_allclose(io.read_image(path), np.round(image * 255) / 255, atol=1e-7)
    io.write_image(path, image[..., 0])  # gray, replaces the file
    np.testing.assert_allclose(io.read_image(path)[..., 2], np.round(image[..., 0] * 255) / 255, atol=1e-7)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="NaN"):
        io.write_image(path, np.full((4, 4, 3), np.nan))
    assert path.read_bytes() == before  # a failed write leaves the old file intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]  # no temporary files left


def test_list_images(tmp_path):
    for name in ("b.png", "a.JPG", "c.tif", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in io.list_images(tmp_path)] == ["a.JPG", "b.png", "c.tif"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(io.ImageError, match="no image files") as err:
        io.list_images(empty)
    assert str(empty) in str(err.value)
    with pytest.raises(io.ImageError, match="no such folder") as err:
        io.list_images(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(err.value)


def test_reference_photo(reference_dir):
    image = io.read_image(reference_dir / "hazy_flower.jpg")
    assert image.shape == (800, 1200, 3) and image.dtype == np.float32
    assert np.isfinite(image).all() and 0 <= image.min() and image.max() <= 1
