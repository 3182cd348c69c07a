"""tfdehaze-export / tfdehaze.export: the SavedModel's signatures, reloads in fresh processes (TF2 and the TF1
session loader TF Serving uses), the custom gradient, atomic versions and one-line errors."""
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import last_line, photo, script

from tfdehaze import export


def test_saved_model_cli_lists_both_signatures(gp2p_export):
    done = script("saved_model_cli", "show", "--all", "--dir", gp2p_export / "1")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    sections = {name: text[text.index(f"signature_def['{name}']"):] for name in ("serving_default", "dehaze")}
    bytes_sig = sections["serving_default"].split("signature_def[")[1]
    float_sig = sections["dehaze"].split("signature_def[")[1]
    for name in ("inputs['image_bytes']", "outputs['dehazed_bytes']", "outputs['transmission_bytes']"):
        block = bytes_sig[bytes_sig.index(name):].split("name:")[0]
        assert "dtype: DT_STRING" in block and "shape: (-1)" in block, block
    for name, channels in (("inputs['images']", 3), ("outputs['dehazed']", 3), ("outputs['transmission']", 1)):
        block = float_sig[float_sig.index(name):].split("name:")[0]
        assert "dtype: DT_FLOAT" in block and f"shape: (-1, -1, -1, {channels})" in block, block


RELOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    export_dir, inputs, out = sys.argv[1:]
    data = np.load(inputs)
    images, png = data["images"], data["png"].tobytes()
    results = {}
    loaded = tf.saved_model.load(export_dir)
    floats = loaded.signatures["dehaze"](images=tf.constant(images))
    encoded = loaded.signatures["serving_default"](image_bytes=tf.constant([png, png]))
    for name, value in floats.items():
        results[f"tf2_{name}"] = value.numpy()
    for name, value in encoded.items():
        results[f"tf2_{name}"] = np.stack([tf.io.decode_png(v).numpy() for v in value.numpy()])
    with tf.compat.v1.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        sig = meta.signature_def["dehaze"]
        got = sess.run({k: v.name for k, v in sig.outputs.items()}, {sig.inputs["images"].name: images})
        results.update({f"tf1_{k}": v for k, v in got.items()})
        sig = meta.signature_def["serving_default"]
        got = sess.run({k: v.name for k, v in sig.outputs.items()}, {sig.inputs["image_bytes"].name: [png, png]})
    for name, value in got.items():
        results[f"tf1_{name}"] = np.stack([tf.io.decode_png(v).numpy() for v in value])
    np.savez(out, **results)
""")


def test_fresh_process_reload_matches_keras(gp2p_export, gp2p_keras, tmp_path):
    images = np.stack([photo((40, 48)), photo((40, 48))[::-1]])
    png = tf.io.encode_png(tf.cast(tf.round(images[1] * 255), tf.uint8)).numpy()
    np.savez(tmp_path / "inputs.npz", images=images, png=np.frombuffer(png, np.uint8))
    done = subprocess.run([sys.executable, "-c", RELOAD, str(gp2p_export / "1"), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = dict(np.load(tmp_path / "out.npz"))
    expected = {k: np.clip(v.numpy(), 0, 1) for k, v in gp2p_keras(images, training=False).items()}
    decoded = tf.io.decode_png(png).numpy()[None].astype(np.float32) / 255
    from_png = {k: np.clip(v.numpy(), 0, 1) for k, v in gp2p_keras(decoded, training=False).items()}
    for loader in ("tf2", "tf1"):
        for name in ("dehazed", "transmission"):
            np.testing.assert_allclose(got[f"{loader}_{name}"], expected[name], atol=1e-5, err_msg=f"{loader} {name}")
            pngs = got[f"{loader}_{name}_bytes"].astype(np.int32)
            assert pngs.shape == (2, 40, 48, expected[name].shape[-1])
            reference = np.round(from_png[name][0] * 255).astype(np.int32)
            assert np.abs(pngs - reference).max() <= 1, f"{loader} {name}_bytes"


def test_custom_gradient_survives_export(gp2p_export, gp2p_keras):
    saved = (gp2p_export / "1" / "saved_model.pb").read_bytes()
    assert b"CustomGradient" in saved  # the guided filter's tf.custom_gradient is recorded in the graph
    loaded = tf.saved_model.load(str(gp2p_export / "1"))
    x = tf.constant(photo((32, 40))[None])
    weights = tf.random.stateless_uniform([1, 32, 40, 3], seed=[1, 2])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        exported = tf.reduce_sum(loaded.signatures["dehaze"](images=x)["dehazed"] * weights)
        reference = tf.reduce_sum(tf.clip_by_value(gp2p_keras(x, training=False)["dehazed"], 0, 1) * weights)
    g_exported, g_reference = tape.gradient(exported, x).numpy(), tape.gradient(reference, x).numpy()
    assert np.abs(g_reference).max() > 0
    np.testing.assert_allclose(g_exported, g_reference, atol=1e-5 * np.abs(g_reference).max())


def _identity():
    return keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])


def test_versions_are_atomic(tmp_path, monkeypatch):
    base = tmp_path / "identity"
    assert export.export_model(_identity(), base).name == "1"
    assert export.export_model(_identity(), base).name == "2"      # next free version
    (base / "2" / "marker").write_text("old")
    with pytest.raises(ValueError, match="identity/2 exists"):
        export.export_model(_identity(), base, version=2)
    assert export.export_model(_identity(), base, version=2, overwrite=True).name == "2"
    assert not (base / "2" / "marker").exists()

    def broken(self, filepath, **kwargs):
        (tf.io.gfile.makedirs(filepath), open(f"{filepath}/saved_model.pb", "wb").close())
        raise OSError("disk full")

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", broken)  # the backend's class
    with pytest.raises(OSError, match="disk full"):
        export.export_model(_identity(), base, version=3)
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]    # no half-written version, no temporary


def test_weights_file_source_and_run_mismatch(gp2p_run, gp2p_keras, tmp_path):
    gp2p_keras.save_weights(tmp_path / "g.weights.h5")
    model = export.load_source(tmp_path / "g.weights.h5", "guided-pix2pix",
                               json.loads(json.dumps({"depth": 4, "base_filters": 8, "radius": 4})))
    for a, b in zip(model.get_weights(), gp2p_keras.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="is a run of 'guided-pix2pix', not 'minet'"):
        export.load_source(gp2p_run, "minet")


def test_cli_errors_are_one_line(gp2p_export, tmp_path):
    missing = tmp_path / "no-such-run"
    done = script("tfdehaze-export", missing, "--out", tmp_path / "exports")
    assert done.returncode == 2
    assert last_line(done.stderr).startswith(f"tfdehaze-export: error: {missing}: not found")
    done = script("tfdehaze-export", "minet-official", "--out", gp2p_export, "--version", "1")
    assert done.returncode == 2
    assert last_line(done.stderr) == (f"tfdehaze-export: error: {gp2p_export / '1'} exists: choose another "
                                      "--version or pass --overwrite")
    (tmp_path / "w.weights.h5").write_bytes(b"")
    done = script("tfdehaze-export", tmp_path / "w.weights.h5", "--model", "no-such-model", "--out", tmp_path / "e")
    assert done.returncode == 2
    line = last_line(done.stderr)
    assert line.startswith("tfdehaze-export: error:") and "no-such-model" in line and "guided-pix2pix" in line
    assert done.stdout == "" and not (tmp_path / "e").exists()
