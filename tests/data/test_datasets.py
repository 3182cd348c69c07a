"""tfdehaze.data.datasets: naming layouts, manifests with relative paths, validation that names every bad file."""
import os
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from tfdehaze.data import datasets


def touch(folder, *names, size=(8, 8)):
    """Tiny real images (content = hash of the name) so validation can decode them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        value = sum(map(ord, name)) % 256
        cv2.imwrite(str(folder / name), np.full(size + (3,), value, np.uint8))
    return folder


def names(df, column):
    return [os.path.basename(p) for p in df[column]]


def test_its(tmp_path):
    hazy = touch(tmp_path / "hazy", "1_1_0.90179.png", "1_2_0.7.png", "2_1_1.2.png")
    clear = touch(tmp_path / "clear", "1.png", "2.png")
    trans = touch(tmp_path / "trans", "1_1.png", "1_2.png", "2_1.png")
    for layout in ("its", "auto"):
        df = datasets.pair_folders(hazy, clear, trans, layout=layout)
        assert list(df.columns) == ["hazy", "clear", "transmission"]
        assert names(df, "hazy") == ["1_1_0.90179.png", "1_2_0.7.png", "2_1_1.2.png"]
        assert names(df, "clear") == ["1.png", "1.png", "2.png"]
        assert names(df, "transmission") == ["1_1.png", "1_2.png", "2_1.png"]
        assert all(os.path.isabs(p) for p in df.to_numpy().ravel())


def test_sots_indoor_and_outdoor(tmp_path):
    df = datasets.pair_folders(touch(tmp_path / "in_h", "1400_1.png", "1400_10.png", "1401_3.png"),
                               touch(tmp_path / "in_c", "1400.png", "1401.png"), layout="sots-indoor")
    assert names(df, "clear") == ["1400.png", "1400.png", "1401.png"]
    for layout in ("sots-outdoor", "ots", "auto"):
        df = datasets.pair_folders(touch(tmp_path / "out_h", "0001_0.8_0.2.jpg", "0002_1_0.08.jpg"),
                                   touch(tmp_path / "out_c", "0001.png", "0002.png"), layout=layout)
        assert names(df, "clear") == ["0001.png", "0002.png"]


def test_ihaze_ohaze(tmp_path):
    df = datasets.pair_folders(touch(tmp_path / "ih", "01_indoor_hazy.jpg", "02_indoor_hazy.jpg"),
                               touch(tmp_path / "ig", "01_indoor_GT.jpg", "02_indoor_GT.jpg"), layout="ihaze")
    assert names(df, "clear") == ["01_indoor_GT.jpg", "02_indoor_GT.jpg"]
    for layout in ("ohaze", "auto"):
        df = datasets.pair_folders(touch(tmp_path / "oh", "45_outdoor_hazy.jpg"),
                                   touch(tmp_path / "og", "45_outdoor_GT.jpg"), layout=layout)
        assert names(df, "clear") == ["45_outdoor_GT.jpg"]


def test_rice_and_generic_same_stem(tmp_path):
    df = datasets.pair_folders(touch(tmp_path / "cloud", "0.png", "1.png"), touch(tmp_path / "label", "0.png", "1.png"),
                               layout="rice")
    assert names(df, "clear") == ["0.png", "1.png"]
    df = datasets.pair_folders(touch(tmp_path / "a", "scene.jpg", "x_1.png"),
                               touch(tmp_path / "b", "scene.png", "x_1.bmp"))
    assert names(df, "clear") == ["scene.png", "x_1.bmp"]  # auto prefers the same stem over the ID_* rule


def test_unpaired_file_is_named(tmp_path):
    hazy = touch(tmp_path / "hazy", "1_1_0.9.png", "7_1_0.9.png")
    clear = touch(tmp_path / "clear", "1.png")
    with pytest.raises(ValueError, match="7_1_0.9.png") as err:
        datasets.pair_folders(hazy, clear, layout="its")
    assert "1_1_0.9.png" not in str(err.value)
    with pytest.warns(UserWarning, match="7_1_0.9.png"):
        df = datasets.pair_folders(hazy, clear, layout="its", strict=False)
    assert names(df, "hazy") == ["1_1_0.9.png"]
    with pytest.raises(ValueError, match="transmission.*1_1_0.9.png|1_1_0.9.png.*transmission"):
        datasets.pair_folders(hazy, clear, touch(tmp_path / "trans", "9_9.png"), layout="its", strict=False)


def test_name_breaking_the_layout_and_ambiguity(tmp_path):
    with pytest.raises(ValueError, match="hazy_photo.png.*'its' layout"):
        datasets.pair_folders(touch(tmp_path / "h", "hazy_photo.png"), touch(tmp_path / "c", "hazy.png"), layout="its")
    with pytest.raises(ValueError, match="ambiguous.*a.png.*a.jpg|ambiguous.*a.jpg.*a.png"):
        datasets.pair_folders(touch(tmp_path / "h2", "a.png"), touch(tmp_path / "c2", "a.png", "a.jpg"))
    with pytest.raises(ValueError, match="unknown layout"):
        datasets.pair_folders(tmp_path / "h", tmp_path / "c", layout="nyu")


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "hazy").mkdir()
    clear = touch(tmp_path / "clear", "1.png")
    with pytest.raises(ValueError, match="no image files") as err:
        datasets.pair_folders(tmp_path / "hazy", clear)
    assert str(tmp_path / "hazy") in str(err.value)


def test_manifest_round_trip_relative_paths(tmp_path):
    root = tmp_path / "data"
    df = datasets.pair_folders(touch(root / "hazy", "1_1_0.9.png", "2_1_0.9.png"),
                               touch(root / "clear", "1.png", "2.png"),
                               touch(root / "trans", "1_1.png", "2_1.png"))
    outside = touch(tmp_path / "elsewhere", "9.png") / "9.png"
    df.loc[1, "clear"] = str(outside)
    df["beta"] = [0.9, 1.1]
    datasets.write_manifest(df, root / "manifest.csv")
    text = (root / "manifest.csv").read_text()
    assert "hazy/1_1_0.9.png" in text and str(root) not in text and str(outside) in text
    shutil.move(root, tmp_path / "moved")  # relative paths follow the folder
    back = datasets.read_manifest(tmp_path / "moved" / "manifest.csv")
    assert list(back.columns) == ["hazy", "clear", "transmission", "beta"]
    assert back.loc[0, "hazy"] == str(tmp_path / "moved" / "hazy" / "1_1_0.9.png")
    assert back.loc[1, "clear"] == str(outside)
    assert back["beta"].tolist() == [0.9, 1.1]
    assert all(os.path.isfile(p) for p in back[["hazy", "transmission"]].to_numpy().ravel())


def test_read_manifest_errors(tmp_path):
    pd.DataFrame({"hazy": ["a.png"], "target": ["b.png"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="missing column.*clear") as err:
        datasets.read_manifest(tmp_path / "m.csv")
    assert "m.csv" in str(err.value)
    with pytest.raises(ValueError, match="no such manifest"):
        datasets.read_manifest(tmp_path / "none.csv")
    (tmp_path / "e.csv").write_text("hazy,clear\na.png,\n")
    with pytest.raises(ValueError, match="empty 'clear' path in row"):
        datasets.read_manifest(tmp_path / "e.csv")


def test_validate_names_every_bad_file(tmp_path, rng):
    hazy = touch(tmp_path / "hazy", "1.png", "2.png", "3.png", "4.png", "5.png", size=(16, 16))
    clear = touch(tmp_path / "clear", "1.png", "2.png", "3.png", size=(16, 16))
    touch(clear, "4.png", size=(16, 12))  # smaller: mismatch
    touch(clear, "5.png", size=(20, 18))  # larger in both: allowed (SOTS outdoor)
    (hazy / "2.png").write_bytes(rng.bytes(200))  # corrupt
    (clear / "3.png").write_text("not an image at all")  # non-image
    df = datasets.pair_folders(hazy, clear)
    with pytest.raises(ValueError) as err:
        datasets.validate(df)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert str(hazy / "2.png") in message and str(clear / "3.png") in message
    assert "size mismatch" in message and str(clear / "4.png") in message and "16x12" in message
    assert str(clear / "5.png") not in message and str(hazy / "1.png") not in message
    with pytest.raises(ValueError, match="5.png"):
        datasets.validate(df, allow_larger_clear=False)
    good = datasets.validate(df[df["hazy"].str.endswith(("1.png", "5.png"))])
    assert good["height"].tolist() == [16, 16] and good["width"].tolist() == [16, 16]


def test_validate_transmission_size_and_header_mode(tmp_path):
    hazy = touch(tmp_path / "hazy", "1_1_0.9.png", size=(16, 16))
    clear = touch(tmp_path / "clear", "1.png", size=(16, 16))
    trans = touch(tmp_path / "trans", "1_1.png", size=(8, 8))
    df = datasets.pair_folders(hazy, clear, trans)
    with pytest.raises(ValueError, match="transmission.*1_1.png.*8x8"):
        datasets.validate(df)
    touch(trans, "1_1.png", size=(16, 16))
    data = (trans / "1_1.png").read_bytes()
    (trans / "1_1.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    for decode in (True, False):
        with pytest.raises(ValueError, match="1_1.png.*(truncated|corrupt)"):
            datasets.validate(df, decode=decode)


def test_split_pairs(tmp_path):
    df = pd.DataFrame({"hazy": [f"/h/{i:02d}_{k}_0.9.png" for i in range(20) for k in range(3)],
                       "clear": [f"/c/{i:02d}.png" for i in range(20) for k in range(3)]})
    parts = datasets.split_pairs(df, (0.7, 0.15, 0.15), seed=1)
    assert [len(parts[n]) for n in ("train", "val", "test")] == [42, 9, 9]
    scenes = [set(parts[n]["clear"]) for n in ("train", "val", "test")]
    assert not (scenes[0] & scenes[1] or scenes[0] & scenes[2] or scenes[1] & scenes[2])  # no scene leaks
    assert set.union(*scenes) == set(df["clear"])
    assert datasets.split_pairs(df, (0.7, 0.15, 0.15), seed=1)["test"].equals(parts["test"])
    assert not datasets.split_pairs(df, (0.7, 0.15, 0.15), seed=2)["test"].equals(parts["test"])
    ohaze = pd.DataFrame({"hazy": [f"/h/{i:02d}_outdoor_hazy.jpg" for i in range(1, 46)],
                          "clear": [f"/g/{i:02d}_outdoor_GT.jpg" for i in range(1, 46)]})
    ntire = datasets.split_pairs(ohaze, "ntire")
    assert [len(ntire[n]) for n in ("train", "val", "test")] == [35, 5, 5]
    assert ntire["val"]["hazy"].str.contains("/3[6-9]_|/40_").all()
    assert ntire["test"]["hazy"].iloc[-1].endswith("45_outdoor_hazy.jpg")
    with pytest.raises(ValueError, match="summing to 1"):
        datasets.split_pairs(df, (0.5, 0.2))


def test_reference_sots_indoor(reference_dir):
    root = reference_dir / "sots_indoor_sample"
    df = datasets.pair_folders(root / "hazy", root / "clear", layout="sots-indoor")
    assert len(df) == 12
    assert all(os.path.basename(h).split("_")[0] + ".png" == os.path.basename(c) for h, c in zip(df.hazy, df.clear))
    checked = datasets.validate(df)
    assert set(zip(checked["height"], checked["width"])) == {(460, 620)}
