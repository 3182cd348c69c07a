"""Latency of one 512x512 image through Guided-Pix2Pix (paper size: depth 9, 64 filters, radius 60; random
weights): the Keras model (graph mode), the reloaded SavedModel (`dehaze` float signature and `serving_default`
PNG bytes in / PNGs out) and the REST round trip to `tfdehaze-serve`'s server (Client.predict: PNG encode, HTTP,
JSON/base64, decode). Median of a few runs after one warm-up.

    python benchmarks/serving.py [--runs 5] [--size 512] [--quick]

``--quick``: a tiny Guided-Pix2Pix (depth 5, 8 filters, radius 2) on a 32 x 32 image, one run (seconds; checks that
the script runs).
"""
import argparse
import os
import pathlib
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common  # noqa: E402  benchmarks/_common.py
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdehaze.export import export_model  # noqa: E402
from tfdehaze.models import registry  # noqa: E402
from tfdehaze.serving import Client, ModelServer  # noqa: E402
from tfdehaze.serving.client import encode_image  # noqa: E402


def median_ms(fn, runs):
    return 1000 * statistics.median(_common.timed(fn, runs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="tiny model, 32 px, one run: checks the script runs")
    args = parser.parse_args()
    tiny = {"depth": 5, "base_filters": 8, "radius": 2} if args.quick else {}
    if args.quick:
        args.size, args.runs = 32, 1
    model = registry.build("guided-pix2pix", **tiny)
    image = np.random.default_rng(0).random((args.size, args.size, 3), dtype=np.float32)
    batch = tf.constant(image[None])
    model(batch, training=False)
    keras_fn = tf.function(lambda x: model(x, training=False)["dehazed"])
    base = pathlib.Path(tempfile.mkdtemp(), "gp2p")
    export_model(model, base)
    loaded = tf.saved_model.load(str(base / "1"))
    png = encode_image(np.round(image * 255) / 255)   # an 8-bit-valued image as a 16-bit PNG
    rows = [("Keras model, tf.function (float32)", median_ms(lambda: keras_fn(batch).numpy(), args.runs)),
            ("SavedModel `dehaze` (float32)",
             median_ms(lambda: loaded.signatures["dehaze"](images=batch)["dehazed"].numpy(), args.runs)),
            ("SavedModel `serving_default` (PNG bytes)",
             median_ms(lambda: loaded.signatures["serving_default"](image_bytes=tf.constant([png])), args.runs))]
    with ModelServer(base, port=0) as server:
        client = Client(server.url, "gp2p", timeout=300)
        rows.append(("REST round trip, tfdehaze-serve + Client.predict", median_ms(lambda: client.predict(image),
                                                                                   args.runs)))
    print(f"Guided-Pix2Pix ({'tiny' if tiny else 'paper size'}, random weights), one {args.size}x{args.size} image, "
          f"median of {args.runs} runs, {os.cpu_count()} CPU cores\n")
    print("| path | latency (ms) |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.0f} |")


if __name__ == "__main__":
    main()
