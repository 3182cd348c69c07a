"""tfdehaze-serve (installed script, real HTTP on 127.0.0.1) and tfdehaze.serving.Client, end to end."""
import base64
import json
import os
import select
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import BIN, last_line, photo, script

from tfdehaze.serving import Client, ServingError

LIMIT = 2_000_000


@pytest.fixture(scope="module")
def server(gp2p_export):
    """``tfdehaze-serve EXPORT --port 0``; the URL comes from its first stdout line (no port race)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen([str(BIN / "tfdehaze-serve"), str(gp2p_export), "--port", "0",
                                "--max-body-bytes", str(LIMIT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline() if ready else ""
        assert "serving gp2p version 1" in line, (line, process.poll())
        url = line.split(" at ")[1].split("/v1/")[0]
        Client(url, "gp2p").wait_ready(timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _post(url, body, content_type="application/json"):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _keras_reference(model, data):
    """What the export computes: TF's decoder, the model, clipped."""
    image = tf.io.decode_image(data, channels=3, dtype=tf.float32, expand_animations=False)[None]
    return {k: np.clip(v.numpy()[0], 0, 1) for k, v in model(image, training=False).items()}


def test_predict_jpeg_and_png_of_different_sizes(server, gp2p_keras, tmp_path):
    jpeg, png = tmp_path / "a.jpg", tmp_path / "b.png"
    cv2.imwrite(str(jpeg), np.round(photo((48, 64))[..., ::-1] * 255).astype(np.uint8))
    cv2.imwrite(str(png), np.round(photo((72, 40))[..., ::-1] * 255).astype(np.uint8))
    client = Client(server, "gp2p")
    for path, shape in ((jpeg, (48, 64, 3)), (png, (72, 40, 3))):
        dehazed = client.predict(path)
        assert dehazed.shape == shape and dehazed.dtype == np.float32
        np.testing.assert_allclose(dehazed, _keras_reference(gp2p_keras, path.read_bytes())["dehazed"],
                                   atol=0.5 / 255 + 1e-5)
    both = client.predict_outputs([jpeg, png.read_bytes()])   # two sizes in one request
    assert [o["dehazed"].shape for o in both] == [(48, 64, 3), (72, 40, 3)]
    expected = _keras_reference(gp2p_keras, png.read_bytes())["transmission"]
    np.testing.assert_allclose(both[1]["transmission"], expected, atol=0.5 / 255 + 1e-5)
    image = photo((32, 32))                                 # a numpy image goes out as a 16-bit PNG
    expected = np.clip(gp2p_keras(image[None], training=False)["dehazed"].numpy()[0], 0, 1)
    np.testing.assert_allclose(client.predict(image), expected, atol=0.5 / 255 + 1e-4)


def test_status_metadata_and_formats(server):
    client = Client(server, "gp2p")
    assert client.status()["model_version_status"][0] == {"version": "1", "state": "AVAILABLE",
                                                           "status": {"error_code": "OK", "error_message": ""}}
    meta = client.metadata()
    assert meta["model_spec"] == {"name": "gp2p", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert sorted(sig["outputs"]) == ["dehazed_bytes", "transmission_bytes"]
    data = cv2.imencode(".png", np.full((8, 6, 3), 128, np.uint8))[1].tobytes()
    b64 = {"b64": base64.b64encode(data).decode()}
    status, body = _post(f"{server}/v1/models/gp2p:predict", json.dumps({"inputs": {"image_bytes": [b64]}}).encode())
    assert status == 200 and sorted(body["outputs"]) == ["dehazed_bytes", "transmission_bytes"]
    assert len(body["outputs"]["dehazed_bytes"]) == 1 and "b64" in body["outputs"]["dehazed_bytes"][0]
    status, body = _post(f"{server}/v1/models/gp2p/versions/1:predict",
                         json.dumps({"instances": [{"image_bytes": b64}]}).encode())
    assert status == 200 and sorted(body["predictions"][0]) == ["dehazed_bytes", "transmission_bytes"]
    status, body = _post(f"{server}/v1/models/gp2p:predict", json.dumps(
        {"signature_name": "dehaze", "instances": np.full((1, 4, 4, 3), 0.5).tolist()}).encode())
    assert status == 200 and np.asarray(body["predictions"][0]["dehazed"]).shape == (4, 4, 3)


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    predict = f"{server}/v1/models/gp2p:predict"
    cases = {
        "malformed JSON": (predict, b'{"instances": [', 400, "JSON"),
        "bad base64": (predict, b'{"instances": [{"b64": "not*base64!"}]}', 400, "base64"),
        "not an image": (predict, json.dumps({"instances": [{"b64": base64.b64encode(b"hello").decode()}]}).encode(),
                         400, "image"),
        "oversized": (predict, b" " * (LIMIT + 1), 413, "exceeds the limit"),
        "unknown model": (f"{server}/v1/models/nothing:predict", b'{"instances": []}', 404, "nothing"),
        "unknown signature": (predict, b'{"signature_name": "x", "instances": [1]}', 400, 'name: "x" not found'),
    }
    client = Client(server, "gp2p")
    for name, (url, body, code, words) in cases.items():
        status, answer = _post(url, body)
        assert (status, name) == (code, name) and words in answer["error"], (name, answer)
        assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
    with pytest.raises(ServingError) as caught:
        Client(server, "nothing").metadata()
    assert caught.value.status == 404 and "nothing" in caught.value.message
    with pytest.raises(ServingError) as caught:
        client.predict(b"GIF89a not really")
    assert caught.value.status == 400 and caught.value.message


def test_fifty_concurrent_requests(server, gp2p_keras):
    client = Client(server, "gp2p", timeout=120)
    images = [photo((32 + 8 * (i % 3), 40)) for i in range(50)]
    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(client.predict, images))
    assert [r.shape for r in results] == [(32 + 8 * (i % 3), 40, 3) for i in range(50)], time.monotonic() - started
    expected = np.clip(gp2p_keras(images[0][None], training=False)["dehazed"].numpy()[0], 0, 1)
    np.testing.assert_allclose(results[0], expected, atol=0.5 / 255 + 1e-4)


def test_serve_cli_names_a_missing_folder(tmp_path):
    done = script("tfdehaze-serve", tmp_path / "no-exports", "--port", "0")
    assert done.returncode == 2
    assert last_line(done.stderr) == f"tfdehaze-serve: error: {tmp_path / 'no-exports'}: model base path not found"
