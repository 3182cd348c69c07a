"""Hostile images, in-process: sizes read from headers, the pixel limit (decompression bombs) in every reader."""
import io as _io
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from tfdehaze.data import datasets, io, pipeline


def fake_png(width, height):
    """The first chunks of a PNG that claims width x height (no pixel data): all a header check may read."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture
def limit(monkeypatch):
    """Set TFDEHAZE_MAX_PIXELS for one test (restored afterwards)."""
    def set_limit(value):
        monkeypatch.setenv(io.MAX_PIXELS_ENV, str(value))
    set_limit("")
    return set_limit


def _encoded(fmt, array, **options):
    buffer = _io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_header_size_agrees_with_pillow(rng):
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    exif = PIL.Image.Exif()
    exif[0x010E] = "x" * 60000  # a 60 kB APP1 segment before the JPEG frame header
    cases = {
        "png": _encoded("PNG", rgb), "png16": _encoded("PNG", rgb[..., 0].astype(np.uint16) * 257),
        "jpeg": _encoded("JPEG", rgb), "progressive": _encoded("JPEG", rgb, progressive=True),
        "jpeg+exif": _encoded("JPEG", rgb, exif=exif.tobytes()), "bmp": _encoded("BMP", rgb),
        "tiff": _encoded("TIFF", rgb), "tiff-lzw": _encoded("TIFF", rgb, compression="tiff_lzw"),
        "bigtiff": _encoded("TIFF", rgb, big_tiff=True),
    }
    for name, data in cases.items():
        assert io.header_size(data, name) == (37, 53), name
        assert io.decode_bytes(data, name).shape[:2] == (37, 53), name
    top_down = bytearray(cases["bmp"])
    top_down[22:26] = struct.pack("<i", -37)  # a negative BMP height: rows stored top to bottom
    assert io.header_size(bytes(top_down)) == (37, 53)
    assert io.header_size(b"GIF89a" + bytes(20)) is None
    for cut in (cases["png"][:20], cases["jpeg"][:100], cases["bmp"][:20], cases["tiff"][:10]):
        with pytest.raises(io.ImageError, match="corrupt or truncated"):
            io.header_size(cut, "cut")


def test_bomb_refused_before_decoding(tmp_path, limit):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(fake_png(20000, 20000))
    for read in (io.read_image, io.decode, lambda path: io.decode_bytes(path.read_bytes(), path)):
        with pytest.raises(io.ImageError) as err:
            read(bomb)
        message = str(err.value)
        assert str(bomb) in message and "20000 x 20000" in message and "400,000,000 pixels" in message
        assert "178,956,970" in message and "--max-pixels" in message and io.MAX_PIXELS_ENV in message
    limit(400_000_000)  # raised: the header passes, and the (fake) data then fails to decode
    with pytest.raises(io.ImageError, match="corrupt or truncated"):
        io.read_image(bomb)


def test_limit_from_environment(tmp_path, limit):
    path = io.write_image(tmp_path / "small.png", np.zeros((30, 40, 3)))
    assert io.read_image(path).shape == (30, 40, 3)
    limit(1199)
    with pytest.raises(io.ImageError, match=r"40 x 30 .* = 1,200 pixels, above the limit of 1,199"):
        io.read_image(path)
    limit(1200)
    assert io.read_image(path).shape == (30, 40, 3)
    limit("many")
    with pytest.raises(ValueError, match="TFDEHAZE_MAX_PIXELS='many'"):
        io.max_pixels()


def test_other_formats_are_refused_by_content(tmp_path, rng):
    gif = tmp_path / "really_a_gif.png"
    gif.write_bytes(_encoded("GIF", rng.integers(0, 256, (8, 8), dtype=np.uint8)))
    with pytest.raises(io.ImageError, match="really_a_gif.png: a GIF image, not PNG, JPEG, BMP or TIFF"):
        io.read_image(gif)


@pytest.mark.parametrize("decode", [True, False])
def test_manifest_validation_names_the_bomb(tmp_path, limit, decode):
    good = io.write_image(tmp_path / "clear.png", np.zeros((8, 8, 3)))
    bomb = tmp_path / "hazy.png"
    bomb.write_bytes(fake_png(20000, 20000))
    with pytest.raises(ValueError, match=r"hazy.png: image is 20000 x 20000") as err:
        datasets.validate(datasets.pd.DataFrame({"hazy": [str(bomb)], "clear": [str(good)]}), decode=decode)
    assert "clear.png" not in str(err.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_pipeline_checks_pixels_in_the_graph(tmp_path, rng, limit, fmt):
    """Without validation, the tf.data decoder still reads the header first (PNG, JPEG, BMP; TIFF goes through
    io.decode_bytes) and refuses an image above the limit, naming the file."""
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(_encoded(fmt, rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)))
    assert next(iter(pipeline.image_dataset([path], validate=False)))["image"].shape == (1, 30, 40, 3)
    limit(1000)
    dataset = pipeline.image_dataset([path], validate=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"(?s)x\.{fmt.lower()}.*limit of 1,000.*1200"):
        next(iter(dataset))


def test_data_prep_scripts_take_max_pixels(tmp_path, limit, capsys):
    from harness import data_prep_module as script

    for folder in ("hazy", "clear"):
        io.write_image(tmp_path / folder / "a.png", np.full((20, 30, 3), 0.5))
    manifest = ["--hazy", str(tmp_path / "hazy"), "--clear", str(tmp_path / "clear"), "--out", str(tmp_path / "m.csv")]
    for args, name in ((manifest + ["--header-only"], "make_manifest"), (manifest, "make_manifest"),
                       ([str(tmp_path / "clear"), str(tmp_path / "synth")], "synthesize_haze")):
        with pytest.raises(SystemExit) as stop:
            script(name).main(args + ["--max-pixels", "599"])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "a.png: image is 30 x 20 (width x height) = 600 pixels, above the limit of 599" in err, name
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "synth" / "manifest.csv").exists()
    limit("")
    assert script("make_manifest").main(manifest + ["--max-pixels", "600"]) == 0


def test_rest_server_refuses_posted_bombs(tmp_path):
    """The REST server reads the header of posted image bytes and answers 400 before the model decodes them."""
    import base64

    import keras

    from tfdehaze.export import export_model
    from tfdehaze.serving.server import LoadedModel, RequestError

    export_model(keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()]), tmp_path / "identity")
    model = LoadedModel(tmp_path / "identity" / "1")
    small = base64.b64encode(_encoded("PNG", np.full((2, 3, 3), 255, np.uint8))).decode()
    assert "predictions" in model.predict({"instances": [{"b64": small}]})
    bomb = base64.b64encode(fake_png(20000, 20000)).decode()
    with pytest.raises(RequestError, match=r"input .*: image is 20000 x 20000 .* above the limit") as err:
        model.predict({"instances": [{"b64": small}, {"b64": bomb}]})
    assert err.value.status == 400
