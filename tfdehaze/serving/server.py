"""A local stand-in for TensorFlow Serving's REST API, for development and tests where TF Serving is not installed.

`ModelServer` serves the newest integer version folder of a model base path (the layout `tfdehaze.export` writes
and TF Serving polls) with the same paths and JSON:

- ``GET /v1/models/NAME[/versions/N]`` -> ``{"model_version_status": [{"version", "state": "AVAILABLE", ...}]}``
- ``GET /v1/models/NAME[/versions/N]/metadata`` -> ``{"model_spec", "metadata": {"signature_def": ...}}``
- ``POST /v1/models/NAME[/versions/N]:predict`` with ``{"signature_name"?, "instances": [...]}`` (row format) ->
  ``{"predictions": [...]}``, or ``{"inputs": ...}`` (columnar) -> ``{"outputs": ...}``. ``{"b64": ...}`` is
  decoded for string inputs; string outputs whose name ends in ``_bytes`` are returned as ``{"b64": ...}``.

Errors are ``{"error": "..."}``: 400 for a bad request (malformed JSON, bad base64, an undecodable image, an image
whose header declares more pixels than `tfdehaze.data.io.max_pixels`, refused before decoding, wrong inputs), 404
for an unknown model, version or path, 413 for a body above ``max_body_bytes``, 500 otherwise. It binds to
127.0.0.1 by default, handles each request in its own thread (``ThreadingHTTPServer``) and keeps serving after
any failed request. It loads the model once at start and does not poll for new versions (restart it).
"""
from __future__ import annotations

import base64
import binascii
import http.server
import json
import os
import pathlib
import re
import threading
from typing import Any

import numpy as np
import tensorflow as tf

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                    r"(?P<action>/metadata|:predict|:[A-Za-z]+)?/?$")


class RequestError(ValueError):
    """A request the server refuses, with its HTTP ``status`` (400, 404, 411, 413).

    Examples:
        >>> from tfdehaze.serving.server import RequestError
        >>> error = RequestError(404, "Servable not found for request: Latest(gp2q)")
        >>> error.status, str(error)
        (404, 'Servable not found for request: Latest(gp2q)')
    """

    def __init__(self, status: int, message: str):
        self.status = int(status)
        super().__init__(message)


def newest_version(model_base_path: str | os.PathLike) -> pathlib.Path:
    """The version folder TF Serving would serve: the largest integer-named folder holding a ``saved_model.pb``.

    Examples:
        >>> import pathlib, tempfile
        >>> from tfdehaze.serving.server import newest_version
        >>> base = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("1", "10", "9", ".tmp-export-1", "latest"):
        ...     (base / name).mkdir()
        ...     _ = (base / name / "saved_model.pb").write_bytes(b"")
        >>> newest_version(base).name
        '10'
        >>> newest_version(base / "missing")
        Traceback (most recent call last):
        ...
        ValueError: .../missing: model base path not found
    """
    base = pathlib.Path(model_base_path)
    if not base.is_dir():
        raise ValueError(f"{base}: model base path not found")
    versions = [p for p in base.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    if not versions:
        raise ValueError(f"{base}: no version folder (an integer name holding saved_model.pb); "
                         "write one with tfdehaze-export")
    return max(versions, key=lambda p: int(p.name))


def _dtype_name(dtype: tf.DType) -> str:
    return "DT_" + dtype.name.upper().replace("FLOAT32", "FLOAT").replace("FLOAT64", "DOUBLE")


def _tensor_info(spec: Any, name: str) -> dict:
    shape = spec.shape
    dims = [] if shape.rank is None else [{"size": str(-1 if d is None else d), "name": ""} for d in shape.as_list()]
    return {"dtype": _dtype_name(spec.dtype), "tensor_shape": {"dim": dims, "unknown_rank": shape.rank is None},
            "name": name}


def _decode_b64(value: Any) -> Any:
    """Replace every ``{"b64": text}`` in a JSON value by the bytes it encodes."""
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise RequestError(400, f"expected {{\"b64\": ...}} for a string value, got keys {sorted(value)}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as error:
            raise RequestError(400, f"invalid base64 in a \"b64\" value: {error}") from None
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _check_image_bytes(value: Any, name: str) -> None:
    """Refuse posted image bytes whose header declares more pixels than `tfdehaze.data.io.max_pixels` (400), before
    the model decodes them; bytes that are not PNG / JPEG / BMP / TIFF are left to the model."""
    from tfdehaze.data import io as image_io

    if isinstance(value, list):
        for item in value:
            _check_image_bytes(item, name)
    elif isinstance(value, bytes):
        try:
            image_io.check_image_size(value, f"input {name!r}")
        except image_io.ImageError as error:
            raise RequestError(400, str(error)) from None


def _to_tensor(value: Any, spec: Any, name: str) -> tf.Tensor:
    if spec.dtype == tf.string:
        value = _decode_b64(value)
        _check_image_bytes(value, name)
    try:
        tensor = tf.constant(value, dtype=spec.dtype)
    except (ValueError, TypeError) as error:
        raise RequestError(400, f"input {name!r}: cannot convert to {spec.dtype.name} ({error})") from None
    if not spec.shape.is_compatible_with(tensor.shape):
        raise RequestError(400, f"input {name!r}: shape {tensor.shape.as_list()} does not match the signature's "
                                f"{spec.shape.as_list()}")
    return tensor


def _to_json(name: str, value: np.ndarray) -> Any:
    if value.dtype == object or value.dtype.kind == "S":
        def convert(item):
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(item).decode("ascii")}
            try:
                return item.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(item).decode("ascii")}
        return np.vectorize(convert, otypes=[object])(value).tolist() if value.ndim else convert(value.item())
    return value.tolist()


def _tf_message(text: str) -> str:
    """The line of a TensorFlow error message that says what went wrong (not 'Graph execution error', traces)."""
    skip = ("Graph execution error", "Detected at node", "<stack traces", "[[", "[Op:")
    lines = [line.strip() for line in text.splitlines()]
    useful = [line for line in lines if line and not line.startswith(skip)]
    return useful[0] if useful else text.strip()


class LoadedModel:
    """One SavedModel version loaded with ``tf.saved_model.load``: its signatures, metadata and `predict`.

    Examples:
        >>> import pathlib, tempfile
        >>> import keras
        >>> from tfdehaze.export import export_model
        >>> from tfdehaze.serving.server import LoadedModel
        >>> base = pathlib.Path(tempfile.mkdtemp(), "identity")
        >>> _ = export_model(keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()]), base)
        >>> model = LoadedModel(base / "1")
        >>> model.predict({"signature_name": "dehaze", "instances": [[[[0.25, 0.5, 1.0]]]]})  # one output: no name
        {'predictions': [[[[0.25, 0.5, 1.0]]]]}
        >>> model.predict({"instances": [{"b64": "bm90IGFuIGltYWdl"}]})  # "not an image"
        Traceback (most recent call last):
        ...
        tfdehaze.serving.server.RequestError: Unknown image file format. One of JPEG, ...
    """

    def __init__(self, version_dir: str | os.PathLike):
        self.path = pathlib.Path(version_dir)
        self.version = self.path.name
        self.module = tf.saved_model.load(str(self.path))
        self.signatures = dict(self.module.signatures)
        if "serving_default" not in self.signatures:
            raise ValueError(f"{self.path}: the SavedModel has no serving_default signature")

    def metadata(self, name: str) -> dict:
        """TF Serving's ``/metadata`` answer for this model served as ``name``.
        """
        defs = {}
        for key, fn in self.signatures.items():
            inputs = {n: _tensor_info(s, f"{key}_{n}:0") for n, s in fn.structured_input_signature[1].items()}
            outputs = {n: _tensor_info(t, f"StatefulPartitionedCall:{i}")
                       for i, (n, t) in enumerate(sorted(fn.structured_outputs.items()))}
            defs[key] = {"inputs": inputs, "outputs": outputs, "method_name": "tensorflow/serving/predict",
                         "defaults": {}}
        return {"model_spec": {"name": name, "signature_name": "", "version": self.version},
                "metadata": {"signature_def": {"signature_def": defs}}}

    def predict(self, request: Any) -> dict:
        """Run a ``:predict`` request body (already parsed JSON) and return the answer body.
        """
        if not isinstance(request, dict):
            raise RequestError(400, "the request body must be a JSON object with \"instances\" or \"inputs\"")
        key = request.get("signature_name") or "serving_default"
        fn = self.signatures.get(key)
        if fn is None:
            raise RequestError(400, f"Serving signature name: \"{key}\" not found in signature def "
                                    f"(have {sorted(self.signatures)})")
        specs = fn.structured_input_signature[1]
        row = "instances" in request
        if row == ("inputs" in request):
            raise RequestError(400, "the request must have exactly one of \"instances\" (row format) or "
                                    "\"inputs\" (columnar format)")
        if row:
            instances = request["instances"]
            if not isinstance(instances, list) or not instances:
                raise RequestError(400, "\"instances\" must be a non-empty list")
            if all(isinstance(i, dict) and "b64" not in i for i in instances):
                missing = [n for n in specs if any(n not in i for i in instances)]
                if missing or any(set(i) - set(specs) for i in instances):
                    raise RequestError(400, f"each instance must name the inputs {sorted(specs)}")
                columns = {n: [i[n] for i in instances] for n in specs}
            elif len(specs) == 1:
                columns = {next(iter(specs)): instances}
            else:
                raise RequestError(400, f"signature {key!r} has inputs {sorted(specs)}: give each instance as a "
                                        "JSON object")
        else:
            inputs = request["inputs"]
            if isinstance(inputs, dict) and "b64" not in inputs:
                if set(inputs) != set(specs):
                    raise RequestError(400, f"\"inputs\" must name the inputs {sorted(specs)}, got {sorted(inputs)}")
                columns = inputs
            elif len(specs) == 1:
                columns = {next(iter(specs)): inputs}
            else:
                raise RequestError(400, f"signature {key!r} has inputs {sorted(specs)}: give \"inputs\" as an object")
        tensors = {n: _to_tensor(columns[n], specs[n], n) for n in specs}
        try:
            outputs = fn(**tensors)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, tf.errors.FailedPreconditionError,
                tf.errors.UnimplementedError) as error:
            raise RequestError(400, _tf_message(error.message)) from None
        values = {n: t.numpy() for n, t in sorted(outputs.items())}
        if not row:
            body = {n: _to_json(n, v) for n, v in values.items()}
            return {"outputs": next(iter(body.values())) if len(body) == 1 else body}
        sizes = {v.shape[0] if v.ndim else None for v in values.values()}
        if len(sizes) != 1 or None in sizes:
            raise RequestError(400, "row format needs outputs sharing their batch dimension: use \"inputs\"")
        columns_out = {n: _to_json(n, v) for n, v in values.items()}
        size = sizes.pop()
        if len(columns_out) == 1:
            return {"predictions": next(iter(columns_out.values()))}
        return {"predictions": [{n: column[i] for n, column in columns_out.items()} for i in range(size)]}


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "tfdehaze-serve"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet unless asked
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: dict, close: bool = False) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _model(self, name: str, version: str | None) -> LoadedModel:
        model = self.server.model
        if name != self.server.model_name:
            detail = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise RequestError(404, f"Servable not found for request: {detail}")
        if version is not None and version != model.version:
            raise RequestError(404, f"Servable not found for request: Specific({name}, {version})")
        return model

    def _route(self, method: str) -> None:
        match = _ROUTE.match(self.path.split("?", 1)[0])
        if match is None:
            raise RequestError(404, f"Malformed request: {method} {self.path}")
        model = self._model(match["name"], match["version"])
        action = match["action"]
        if method == "GET" and action is None:
            self._send(200, {"model_version_status": [{"version": model.version, "state": "AVAILABLE",
                                                       "status": {"error_code": "OK", "error_message": ""}}]})
        elif method == "GET" and action == "/metadata":
            self._send(200, model.metadata(self.server.model_name))
        elif method == "POST" and action == ":predict":
            self._send(200, model.predict(self._json_body()))
        else:
            raise RequestError(404, f"Malformed request: {method} {self.path}")

    def _json_body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError(411, "a request body needs a Content-Length header")
        length = int(length)
        if length > self.server.max_body_bytes:
            self._drain(length)
            raise RequestError(413, f"request body of {length} bytes exceeds the limit of "
                                    f"{self.server.max_body_bytes} bytes (tfdehaze-serve --max-body-bytes)")
        body = self.rfile.read(length)
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(400, f"JSON Parse error: {error}") from None

    def _drain(self, length: int) -> None:
        """Read and drop a refused body (up to 4x the limit) so the client can read the 413 answer."""
        left = min(length, 4 * self.server.max_body_bytes)
        self.close_connection = True
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def _handle(self, method: str) -> None:
        try:
            self._route(method)
        except RequestError as error:
            self._send(error.status, {"error": str(error)}, close=error.status in (411, 413))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:  # keep serving whatever happened
            self._send(500, {"error": f"{type(error).__name__}: {error}"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


class ModelServer(http.server.ThreadingHTTPServer):
    """TF Serving's REST API for the newest version under ``model_base_path``, served as ``model_name`` (default
    the folder's name) on ``host:port`` (port 0: a free port, see ``url``).

    `start` serves from a daemon thread, `serve_forever` blocks; `shutdown` + ``server_close`` (or the ``with``
    block) stop it.

    Examples:
        >>> import json, pathlib, tempfile, urllib.request
        >>> import keras
        >>> from tfdehaze.export import export_model
        >>> from tfdehaze.serving import ModelServer
        >>> base = pathlib.Path(tempfile.mkdtemp(), "gp2p")
        >>> _ = export_model(keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()]), base)
        >>> with ModelServer(base, port=0, max_body_bytes=1000) as server:
        ...     meta = json.load(urllib.request.urlopen(f"{server.url}/v1/models/gp2p/metadata"))
        ...     try:
        ...         urllib.request.urlopen(f"{server.url}/v1/models/gp2p:predict", data=b"{" * 2000)
        ...     except urllib.error.HTTPError as error:
        ...         print(error.code, json.load(error)["error"])
        413 request body of 2000 bytes exceeds the limit of 1000 bytes (tfdehaze-serve --max-body-bytes)
        >>> server.model_name, meta["model_spec"]["version"], sorted(meta["metadata"]["signature_def"]["signature_def"])
        ('gp2p', '1', ['dehaze', 'serving_default'])
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, model_base_path: str | os.PathLike, model_name: str | None = None, host: str = "127.0.0.1",
                 port: int = 8501, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, verbose: bool = False):
        base = pathlib.Path(model_base_path)
        self.model = LoadedModel(newest_version(base))
        self.model_name = model_name or base.resolve().name
        self.max_body_bytes = int(max_body_bytes)
        if self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.verbose = verbose
        self._thread: threading.Thread | None = None
        super().__init__((host, int(port)), _Handler)

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the bound socket.
        """
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ModelServer:
        """Serve from a daemon thread; returns self.
        """
        self._thread = threading.Thread(target=self.serve_forever, name="tfdehaze-serve", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.server_close()


def serve(model_base_path: str | os.PathLike, port: int = 8501, host: str = "127.0.0.1", model_name: str | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, verbose: bool = False) -> None:
    """Serve until interrupted (what ``tfdehaze-serve`` runs); prints one line with the URL once ready.

    Examples:
        >>> import tempfile
        >>> from tfdehaze.serving.server import serve
        >>> serve(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        ValueError: ...: no version folder (an integer name holding saved_model.pb); write one with tfdehaze-export
    """
    server = ModelServer(model_base_path, model_name=model_name, host=host, port=port,
                         max_body_bytes=max_body_bytes, verbose=verbose)
    print(f"serving {server.model_name} version {server.model.version} from {server.model.path} at "
          f"{server.url}/v1/models/{server.model_name}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
