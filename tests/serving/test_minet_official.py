"""The authors' released MI-Net weights (converted) export, and the export scores what the Keras model scores on
real SOTS-indoor pairs. Two of the 12 reference pairs (620x460; MI-Net official is slow on 2 busy cores)."""
import numpy as np
import tensorflow as tf

from tfdehaze import convert, export, metrics
from tfdehaze.data import io
from tfdehaze.models import registry

PAIRS = 2


def test_minet_official_export_scores_like_keras(reference_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDEHAZE_HOME", str(tmp_path / "home"))
    convert.convert_official_weights(reference_dir / "minet_official_its.pth")
    version = export.export("minet-official", tmp_path / "exports" / "minet")
    model = registry.load("minet-official")
    dehaze = tf.saved_model.load(str(version)).signatures["dehaze"]
    sots = reference_dir / "sots_indoor_sample"
    keras_scores, export_scores = [], []
    for hazy_path in sorted((sots / "hazy").glob("*.png"))[:PAIRS]:
        hazy = io.read_image(hazy_path)[None]
        clear = io.read_image(sots / "clear" / f"{hazy_path.stem.split('_')[0]}.png")[None]
        clear = clear[:, :hazy.shape[1], :hazy.shape[2]] if clear.shape != hazy.shape else clear
        ours = np.clip(model(hazy, training=False)["dehazed"].numpy(), 0, 1)
        exported = dehaze(images=tf.constant(hazy))["dehazed"].numpy()
        keras_scores.append(float(metrics.psnr(ours, clear)[0]))
        export_scores.append(float(metrics.psnr(exported, clear)[0]))
    assert np.mean(keras_scores) > 30.0, keras_scores
    assert abs(np.mean(keras_scores) - np.mean(export_scores)) < 0.01, (keras_scores, export_scores)
