"""Every registered model and every layer class of `tfdehaze.layers` passes the harness of tests/harness.py:
``get_config`` round trip, ``.keras`` save/load, ``tf.train.Checkpoint`` restore (variable by variable), graph mode
equal to eager.

The tests are parametrized over ``MODELS.names()`` (as registered by importing `tfdehaze.models`) and over the Layer
classes in ``tfdehaze.layers.__all__``: a new model or layer gets its test automatically, and FAILS until it has a
tiny configuration in `TINY` / `TINY_LAYERS` below. Entries of names not (yet) registered are unused.
"""
import zlib

import harness  # tests/harness.py (tests/conftest.py puts tests/ on sys.path)
import keras
import numpy as np
import pytest

import tfdehaze.layers
import tfdehaze.models  # noqa: F401  (registers every model name)
from tfdehaze.registry import MODELS

# name -> (constructor overrides, input shape[, call kwargs]). Tiny widths, 16-64 px: the whole file runs in seconds.
# Built with MODELS.get(name).build(**overrides): random weights, never a weights file (minet-official is a preset).
TINY = {
    "guided-pix2pix": ({"depth": 5, "base_filters": 8, "radius": 4}, (2, 64, 64, 3)),
    "guided-pix2pix-rice": ({"depth": 4, "base_filters": 8, "radius": 3}, (2, 32, 32, 3)),
    "minet": ({"filters": 8, "steps": 2}, (2, 32, 32, 3)),
    "minet-official": ({"steps": 1}, (1, 32, 32, 3)),          # the released network: 64 filters, fixed
    "kddn-teacher": ({"filters": 8, "res_blocks": 2, "feature_taps": (1, 2)}, (2, 32, 32, 3),
                     {"return_features": True}),
    "kddn": ({"filters": 8, "groups": 2, "blocks": 1, "reduction": 2, "feature_taps": (1, 2)}, (2, 32, 32, 3),
             {"return_features": True}),
    "rfd-teacher": ({"d": 8, "s": 4, "m": 1, "feature_taps": ("shrink", "output")}, (2, 16, 16, 3),
                    {"return_features": True}),
    "rfd-teacher-plain": ({"d": 8, "s": 4, "m": 1, "feature_taps": ("map1", "output")}, (2, 16, 16, 3),
                          {"return_features": True}),
    "rfd": ({"filters": 8, "groups": 2, "blocks": 1, "reduction": 4, "feature_taps": ("group1", "output")},
            (2, 32, 32, 3), {"return_features": True}),
}

# class name -> (constructor kwargs, or a function returning them (fresh sub-layers per object); input shapes).
# Input shapes: a tuple of ints is one tensor, a list of shapes one list argument (MultiLevelFusion([x1, x2, x3])),
# a tuple of shapes positional arguments (GuidedFilter(guide, x)).
TINY_LAYERS = {
    "ChannelAttention": ({"reduction": 2}, (2, 8, 8, 4)),
    "FFABlock": ({"reduction": 2}, (2, 8, 8, 4)),
    # XLA (jit_compile=True, the default) compiles for every new shape: the guided-pix2pix models cover it.
    "GuidedFilter": ({"radius": 2, "eps": 1e-3, "jit_compile": False}, ((2, 16, 16, 1), (2, 16, 16, 3))),
    "IMBlock": (lambda: {"f": tfdehaze.layers.MLEBlock(4, 2), "steps": 2}, (2, 16, 16, 4)),
    "InstanceNormalization": ({}, (2, 8, 8, 4)),
    "MLEBlock": ({"filters": 4, "dilation": 2, "second_dilation": 1, "smooth": True, "residual": True},
                 (2, 16, 16, 4)),
    "MultiLevelFusion": ({}, [(2, 8, 8, 4)] * 3),
    "PixelAttention": ({"reduction": 2}, (2, 8, 8, 4)),
    "ResidualChannelAttention": ({"reduction": 2}, (2, 8, 8, 4)),
    "ResidualInResidualGroup": ({"blocks": 2, "reduction": 2}, (2, 8, 8, 4)),
    "SWRCAB": ({"reduction": 2}, (2, 8, 8, 4)),
    "SharedSeparableConv2D": ({"kernel_size": 3}, (2, 8, 8, 4)),
    "SyncDropout": ({"rate": 0.5, "seed": 1}, (2, 8, 8, 4)),
}

# name -> weights of the registered defaults (the paper's configuration), where the number comes from, and whether
# the model is built by ``model.build`` ("build") or by a call on a 16 x 16 image ("call"; no build method). A wrong
# width, a missing block or an extra layer changes the count, which shapes and finite values would not show.
PARAMETERS = {
    "guided-pix2pix": (66_995_841, "build", "the 512 px U-Net, by hand in tests/models/test_guided_pix2pix.py"),
    "guided-pix2pix-rice": (66_999_939, "build", "the same + 2 transmission maps of the last layer (4,098)"),
    "minet": (338_122, "call", "the paper's description, by hand in tests/models/test_minet.py"),
    "minet-official": (628_078, "call", "the authors' released checkpoint (73 tensors)"),
    "kddn-teacher": (557_443, "build", "the paper's description, by hand in tests/models/test_kddn.py"),
    "kddn": (2_404_867, "build", "the paper's description, by hand in tests/models/test_kddn.py"),
    "rfd-teacher": (26_451, "build", "RFD Table 3, DSC-MC-FSRCNN: 26.45K"),
    "rfd-teacher-plain": (38_427, "build", "RFD Tables 1 and 3, MC-FSRCNN: 38.42K"),
    "rfd": (96_007, "build", "RFD Table 5, student: 0.096M"),
}

# Real failures waiting for a fix in the package: name -> reason (strict xfail: remove the entry once fixed).
XFAIL_MODELS: dict[str, str] = {}
XFAIL_LAYERS: dict[str, str] = {}

MODEL_NAMES = MODELS.names()
LAYER_CLASSES = sorted(name for name in tfdehaze.layers.__all__
                       if isinstance(getattr(tfdehaze.layers, name), type)
                       and issubclass(getattr(tfdehaze.layers, name), keras.layers.Layer))


def _params(names, xfails):
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=xfails[name])) if name in xfails else name
            for name in names]


def _images(shapes, key):
    """Random images in [0.05, 0.95], seeded by ``key``, with the structure of ``shapes`` (see `TINY_LAYERS`)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))

    def make(shape):
        return rng.uniform(0.05, 0.95, size=shape).astype(np.float32)

    if isinstance(shapes, list):
        return [make(s) for s in shapes]
    if isinstance(shapes, tuple) and shapes and isinstance(shapes[0], tuple):
        return tuple(make(s) for s in shapes)
    return make(shapes)


def _missing(table, names, what, where):
    missing = [name for name in names if name not in table]
    what, verb = (what, "has") if len(missing) == 1 else (what + "s", "have")
    return (f"{what} {missing} {verb} no entry in {where} of tests/test_registered.py: add a tiny configuration "
            "for each (see the other entries), so the harness checks it")


def test_every_registered_model_has_a_tiny_configuration():
    names = MODELS.names()
    assert all(name in TINY for name in names), _missing(TINY, names, "registered model", "TINY")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_registered_defaults_have_the_papers_parameter_count(name):
    if name not in PARAMETERS:
        pytest.fail(f"registered model {name!r} has no entry in PARAMETERS of tests/test_registered.py: add its "
                    "parameter count with the paper's default configuration, and where the number comes from")
    expected, how, _source = PARAMETERS[name]
    model = MODELS.get(name).build()
    if how == "build":
        model.build((None, None, None, 3))
    else:
        model(np.zeros((1, 16, 16, 3), np.float32))
    assert model.count_params() == expected


def test_every_layer_class_has_a_tiny_configuration():
    assert all(name in TINY_LAYERS for name in LAYER_CLASSES), _missing(
        TINY_LAYERS, LAYER_CLASSES, "layer of tfdehaze.layers.__all__", "TINY_LAYERS")


@pytest.mark.parametrize("name", _params(MODEL_NAMES, XFAIL_MODELS))
def test_registered_model_passes_the_harness(name, tmp_path):
    if name not in TINY:
        pytest.fail(_missing(TINY, [name], "registered model", "TINY"))
    overrides, shape, *call = TINY[name]
    harness.check_model(lambda: MODELS.get(name).build(**overrides), _images(shape, name), tmp_path=tmp_path,
                        call_kwargs=call[0] if call else None, label=name)


@pytest.mark.parametrize("name", _params(LAYER_CLASSES, XFAIL_LAYERS))
def test_layer_passes_the_harness(name, tmp_path):
    if name not in TINY_LAYERS:
        pytest.fail(_missing(TINY_LAYERS, [name], "layer", "TINY_LAYERS"))
    kwargs, shapes = TINY_LAYERS[name]
    cls = getattr(tfdehaze.layers, name)
    harness.check_layer(lambda: cls(**(kwargs() if callable(kwargs) else kwargs)), _images(shapes, name),
                        tmp_path=tmp_path, label=name)
