"""Data: image files (io), benchmark layouts and manifests (datasets), tf.data pipelines (pipeline), a bundled sample.

`pipeline` (the only part that needs TensorFlow) is imported on first use, so manifests, image I/O and the data_prep
scripts start without loading TensorFlow.

Examples:
    >>> import pathlib
    >>> import tempfile
    >>> import numpy as np
    >>> from tfdehaze import data
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = data.write_image(root / "hazy" / "a.png", np.full((4, 4), 0.8))
    >>> _ = data.write_image(root / "clear" / "a.png", np.full((4, 4), 0.2))
    >>> len(data.pair_folders(root / "hazy", root / "clear"))
    1
    >>> data.paired_dataset.__module__          # loaded (with TensorFlow) on first use
    'tfdehaze.data.pipeline'
"""
from typing import Any

from tfdehaze.data.datasets import pair_folders, read_manifest, split_pairs, validate, write_manifest
from tfdehaze.data.io import ImageError, list_images, read_image, write_image
from tfdehaze.data.sample import sample_dir

__all__ = ["ImageError", "image_dataset", "list_images", "pair_folders", "paired_dataset", "read_image",
           "read_manifest", "sample_dir", "split_pairs", "validate", "write_image", "write_manifest"]


def __getattr__(name: str) -> Any:
    if name in ("paired_dataset", "image_dataset"):
        from tfdehaze.data import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
