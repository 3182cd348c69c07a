"""A small client of TensorFlow Serving's REST API (standard library only): status, metadata, predict.

It speaks to the official ``tensorflow/serving`` container and to `tfdehaze.serving.ModelServer` alike:
``GET /v1/models/NAME``, ``GET /v1/models/NAME/metadata``, ``POST /v1/models/NAME:predict``. Images go out as
PNG / JPEG bytes in ``{"b64": ...}`` to the ``serving_default`` signature of a `tfdehaze.export` SavedModel and come
back as PNGs, decoded to float32 [0, 1] (H, W, C).
"""
from __future__ import annotations

import base64
import json
import os
import pathlib
import time
import urllib.error
import urllib.request
from typing import Any

import cv2
import numpy as np


class ServingError(RuntimeError):
    """The server answered a request with an HTTP error: ``status`` (e.g. 400, 404, 413, 500), the server's
    ``error`` message (the JSON body's ``error``, else the body text) and the ``url``.

    Examples:
        >>> from tfdehaze.serving.client import ServingError
        >>> error = ServingError(404, "Servable not found for request: Latest(gp2q)", "http://127.0.0.1:8501/v1/models/gp2q")
        >>> error.status, str(error)
        (404, 'HTTP 404 from http://127.0.0.1:8501/v1/models/gp2q: Servable not found for request: Latest(gp2q)')
    """

    def __init__(self, status: int, message: str, url: str):
        self.status, self.message, self.url = int(status), message, url
        super().__init__(f"HTTP {self.status} from {url}: {message}")


def encode_image(image: np.ndarray | bytes | str | os.PathLike) -> bytes:
    """Bytes to send: a path's file content, bytes as they are, or a float [0, 1] (H, W, 3) / (H, W) array as a
    16-bit PNG (so the server sees the array to 1/65535, not rounded to 8 bits).

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.serving.client import decode_png, encode_image
        >>> image = np.random.default_rng(0).random((5, 4, 3), dtype=np.float32)
        >>> data = encode_image(image)
        >>> data[:4], float(np.abs(decode_png(data) - image).max()) < 1e-4
        (b'\\x89PNG', True)
        >>> encode_image(np.zeros((2, 2, 2)))
        Traceback (most recent call last):
        ...
        ValueError: image: expected (H, W, 3) or (H, W) values in [0, 1], got shape (2, 2, 2)
    """
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        path = pathlib.Path(image)
        if not path.is_file():
            raise ValueError(f"{path}: image file not found")
        return path.read_bytes()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(f"image: expected (H, W, 3) or (H, W) values in [0, 1], got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.asarray(array, np.float64)
        if not np.isfinite(array).all():
            raise ValueError("image contains NaN or infinite values")
        array = np.round(np.clip(array, 0.0, 1.0) * 65535).astype(np.uint16)
    if array.ndim == 3:
        array = array[..., ::-1]  # OpenCV writes BGR
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise ValueError("image: PNG encoding failed")
    return buffer.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """PNG (or JPEG) bytes -> float32 [0, 1] (H, W, C) RGB (C = 1 for a grayscale image, e.g. a transmission map).

    Examples:
        >>> import cv2
        >>> import numpy as np
        >>> from tfdehaze.serving.client import decode_png
        >>> data = cv2.imencode(".png", np.full((2, 3), 255, np.uint8))[1].tobytes()
        >>> image = decode_png(data)
        >>> image.shape, image.dtype, float(image.max())
        ((2, 3, 1), dtype('float32'), 1.0)
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("the server returned bytes that are not an image")
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.ndim == 2:
        image = image[..., None]
    elif image.shape[-1] == 4:
        image = image[..., 2::-1]
    elif image.shape[-1] == 3:
        image = image[..., ::-1]
    return np.ascontiguousarray(image, dtype=np.float32) / np.float32(scale)


class Client:
    """TF Serving REST client for one model: ``Client("http://127.0.0.1:8501", "gp2p").predict("hazy.jpg")``.

    Args:
        url: the server's base URL (scheme, host, port).
        model_name: the served model's name.
        version: a model version to address (``/versions/N``), default the newest the server has.
        timeout: seconds for each HTTP request.
        retries: how many times a request is retried after a connection error (refused, reset, timed out), with
            exponential backoff ``backoff * 2**attempt`` seconds. HTTP errors are not retried.

    HTTP errors raise `ServingError` (status and the server's ``error`` message); connection errors that outlast
    the retries raise ``ConnectionError`` naming the URL.

    Examples:
        Against an in-process `tfdehaze.serving.ModelServer` on a free port:

        >>> import pathlib, tempfile
        >>> import keras
        >>> import numpy as np
        >>> from tfdehaze.export import export_model
        >>> from tfdehaze.serving import Client, ModelServer, ServingError
        >>> base = pathlib.Path(tempfile.mkdtemp(), "invert")
        >>> _ = export_model(keras.Sequential([keras.Input((None, None, 3)), keras.layers.Lambda(lambda x: 1 - x)]),
        ...                  base)
        >>> with ModelServer(base, port=0) as server:
        ...     client = Client(server.url, "invert")
        ...     status = client.status()["model_version_status"][0]
        ...     image = np.full((6, 5, 3), 0.25, np.float32)
        ...     dehazed = client.predict(image)
        ...     try:
        ...         Client(server.url, "nothing").status()
        ...     except ServingError as error:
        ...         print(error.status, error.message)
        404 Servable not found for request: Latest(nothing)
        >>> status["version"], status["state"], dehazed.shape, float(dehazed.mean())
        ('1', 'AVAILABLE', (6, 5, 3), 0.749...)
        >>> Client("http://127.0.0.1:9", "x", retries=1, backoff=0.01, timeout=1).status()
        Traceback (most recent call last):
        ...
        ConnectionError: cannot reach http://127.0.0.1:9/v1/models/x after 2 attempts: ...
    """

    def __init__(self, url: str, model_name: str, version: int | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.25):
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.version = version
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)

    @property
    def model_url(self) -> str:
        """``URL/v1/models/NAME[/versions/N]``.

        Examples:
            >>> from tfdehaze.serving import Client
            >>> Client("http://127.0.0.1:8501/", "gp2p", version=2).model_url
            'http://127.0.0.1:8501/v1/models/gp2p/versions/2'
        """
        path = f"{self.url}/v1/models/{self.model_name}"
        return path if self.version is None else f"{path}/versions/{self.version}"

    def request(self, method: str, url: str, body: dict | None = None) -> dict:
        """One JSON request with retries on connection errors; returns the decoded JSON answer.

        Examples:
            >>> from tfdehaze.serving import Client
            >>> Client("http://127.0.0.1:9", "x", retries=0, timeout=1).request("GET", "http://127.0.0.1:9/v1/models/x")
            Traceback (most recent call last):
            ...
            ConnectionError: cannot reach http://127.0.0.1:9/v1/models/x after 1 attempts: ...
        """
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as answer:
                    return json.loads(answer.read())
            except urllib.error.HTTPError as error:
                text = error.read().decode("utf-8", "replace")
                try:
                    message = json.loads(text)["error"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    message = text.strip() or error.reason
                raise ServingError(error.code, str(message), url) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                last = getattr(error, "reason", error)
        raise ConnectionError(f"cannot reach {url} after {self.retries + 1} attempts: {last}")

    def status(self) -> dict:
        """``GET /v1/models/NAME``: ``{"model_version_status": [{"version", "state", "status"}, ...]}``.

        Examples:
            >>> from tfdehaze.serving import Client
            >>> Client("http://127.0.0.1:9", "x", retries=0, timeout=1).status()
            Traceback (most recent call last):
            ...
            ConnectionError: cannot reach http://127.0.0.1:9/v1/models/x after 1 attempts: ...
        """
        return self.request("GET", self.model_url)

    def metadata(self) -> dict:
        """``GET /v1/models/NAME/metadata``: ``{"model_spec", "metadata": {"signature_def": ...}}``.

        Examples:
            >>> from tfdehaze.serving import Client
            >>> Client("http://127.0.0.1:9", "x", retries=0, timeout=1).metadata()
            Traceback (most recent call last):
            ...
            ConnectionError: cannot reach http://127.0.0.1:9/v1/models/x/metadata after 1 attempts: ...
        """
        return self.request("GET", f"{self.model_url}/metadata")

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> dict:
        """Poll `status` until a version is AVAILABLE (returns the status) or ``timeout`` seconds pass.

        Examples:
            >>> from tfdehaze.serving import Client
            >>> Client("http://127.0.0.1:9", "x", retries=0, timeout=1).wait_ready(timeout=0.3, interval=0.1)
            Traceback (most recent call last):
            ...
            TimeoutError: model x at http://127.0.0.1:9 not available after 0.3 s: cannot reach ...
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status()
                if any(v.get("state") == "AVAILABLE" for v in status.get("model_version_status", [])):
                    return status
                reason = f"status {status}"
            except (ConnectionError, ServingError) as error:
                reason = str(error)
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {self.model_name} at {self.url} not available after {timeout} s: {reason}")
            time.sleep(interval)

    def predict_outputs(self, images: Any) -> list[dict[str, np.ndarray]]:
        """Dehaze a batch: ``images`` a list of images (paths, bytes or float arrays; sizes may differ) -> one dict
        per image of the decoded PNG outputs, e.g. ``{"dehazed": (H, W, 3), "transmission": (H, W, 1)}``.

        Examples:
            >>> from tfdehaze.serving import Client
            >>> Client("http://127.0.0.1:9", "x").predict_outputs([])
            Traceback (most recent call last):
            ...
            ValueError: predict_outputs needs at least one image
        """
        images = list(images)
        if not images:
            raise ValueError("predict_outputs needs at least one image")
        instances = [{"b64": base64.b64encode(encode_image(image)).decode("ascii")} for image in images]
        answer = self.request("POST", f"{self.model_url}:predict", {"instances": instances})
        results = []
        for row in answer["predictions"]:
            if set(row) == {"b64"}:  # a single output comes back without its name
                row = {"dehazed_bytes": row}
            results.append({name.removesuffix("_bytes"): decode_png(base64.b64decode(value["b64"]))
                            for name, value in row.items()})
        return results

    def predict(self, image: np.ndarray | bytes | str | os.PathLike) -> np.ndarray:
        """The dehazed image, float32 [0, 1] (H, W, 3), of one image (a path, encoded bytes or a float array).

        Examples:
            >>> from tfdehaze.serving import Client
            >>> Client("http://127.0.0.1:9", "x").predict("missing.jpg")
            Traceback (most recent call last):
            ...
            ValueError: missing.jpg: image file not found
        """
        return self.predict_outputs([image])[0]["dehazed"]
