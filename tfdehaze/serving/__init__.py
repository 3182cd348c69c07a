"""Serving exported models over TF Serving's REST API: `Client` (talks to TF Serving or to `ModelServer`) and
`ModelServer` (a local stand-in, ``tfdehaze-serve``). Export with `tfdehaze.export` / ``tfdehaze-export``."""
from tfdehaze.serving.client import Client, ServingError
from tfdehaze.serving.server import ModelServer, RequestError, serve

__all__ = ["Client", "ModelServer", "RequestError", "ServingError", "serve"]
