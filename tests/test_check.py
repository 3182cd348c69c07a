"""tfdehaze.check: the one shape/range checker, used by every module that takes image batches."""
import re

import numpy as np
import pytest
import tensorflow as tf

from tfdehaze import check, metrics, physics, postprocess
from tfdehaze.layers import attention
from tfdehaze.layers.guided_filter import box_filter, guided_filter


def test_check_image_shapes_dtypes_and_values():
    x = check.check_image(np.zeros((2, 5, 6, 3), np.uint8), "hazy", channels=3, min_size=5)
    assert x.dtype == tf.float32 and x.shape == (2, 5, 6, 3)
    assert check.check_image(np.zeros((1, 2, 2, 1)), "x", dtype=None).dtype == tf.float64  # kept
    assert check.check_image(np.zeros((1, 2, 2, 3)), "g", channels=(1, 3)).shape[-1] == 3
    cases = [
        (dict(x=np.zeros((5, 6, 3))), r"^img must be a 4-D \(N, H, W, C\) tensor, got shape \(5, 6, 3\)$"),
        (dict(x=np.zeros((1, 5, 6, 4)), channels=3), r"^img must have 3 channels, shape \(N, H, W, 3\), got shape"),
        (dict(x=np.zeros((1, 5, 6, 2)), channels=(1, 3)), r"1 or 3 channels.*\(1, 5, 6, 2\)"),
        (dict(x=np.zeros((1, 5, 6, 3)), min_size=6), r"^img must be at least 6 x 6 pixels \(H x W\), got 5 x 6"),
        (dict(x=np.full((1, 2, 2, 3), np.inf), finite=True), r"^img contains 12 NaN/Inf value\(s\) of 12$"),
        (dict(x=np.full((1, 2, 2, 3), -0.5), value_range=(0, 1)), r"^img must be in \[0, 1\], got values in \[-0.5"),
        (dict(x=np.array(["a"]).reshape(1, 1, 1, 1)), r"^img must hold numbers, got dtype string"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            check.check_image(name="img", **kwargs)
        if "dtype" not in match:  # the numpy flavour says "array" where the tensor one says "tensor"
            with pytest.raises(ValueError, match=match.replace("tensor", "array")):
                check.check_array(name="img", **kwargs)


def test_graph_time_shapes():
    """Unknown dimensions pass while tracing (unless a known channel count is required); values are not checked."""
    seen = []

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None])])
    def f(x):
        seen.append(check.check_image(x, "x", channels=3, min_size=11, finite=True, value_range=(0, 1)).shape)
        return x

    f(tf.fill([1, 2, 2, 5], np.nan))  # traced: nothing is known, nothing is checked
    assert seen == [tf.TensorShape([None, None, None, None])]
    with pytest.raises(ValueError, match="known number of channels"):
        tf.function(lambda x: check.check_image(x, "x", known_channels=True),
                    input_signature=[tf.TensorSpec([None, None, None, None])]).get_concrete_function()
    assert check.check_shape(tf.TensorShape([None, 8, 8, 16]), "f", channels=16) == (None, 8, 8, 16)
    with pytest.raises(ValueError, match=r"f must be a 4-D \(N, H, W, C\) shape, got shape <unknown>"):
        check.check_shape(tf.TensorShape(None), "f")


def test_check_same_shape():
    check.check_same_shape(np.zeros((1, 4, 4, 3)), tf.zeros([1, 4, 4, 1]), axes=(0, 1, 2))
    check.check_same_shape((None, 4, 4, 3), (2, 4, 4, 3))  # unknown dimensions are not compared
    with pytest.raises(ValueError, match=r"^guide and x must have the same height: guide \(1, 4, 4, 3\), x"):
        check.check_same_shape(np.zeros((1, 4, 4, 3)), np.zeros((1, 5, 4, 1)), ("guide", "x"), axes=(0, 1, 2))
    with pytest.raises(ValueError, match="same shape"):
        check.check_same_shape(np.zeros((1, 4, 4, 3)), np.zeros((4, 4, 3)))


def _rank3_errors():
    """Each module's entry point given an (8, 8, 3) image: the (argument name, error message) it gives."""
    image = np.zeros((8, 8, 3), np.float32)
    calls = {
        "guide": lambda: guided_filter(image, np.zeros((1, 8, 8, 1), np.float32)),
        "x": lambda: box_filter(image, 1),
        "hazy": lambda: physics.dcp_dehaze(image),
        "a": lambda: metrics.psnr(image, image),
        "image": lambda: postprocess.rescale(image),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as err:
            call()
        yield name, str(err.value)


def test_every_module_reports_bad_shapes_the_same_way():
    """One checker: guided filter, physics, metrics and post-processing word shape errors identically."""
    for name, message in _rank3_errors():
        assert re.fullmatch(rf"{name} must be a 4-D \(N, H, W, [^)]+\) (tensor|array), got shape \(8, 8, 3\)",
                            message), message
    with pytest.raises(ValueError, match=r"^ChannelAttention input must have a known number of channels, got shape"):
        attention.ChannelAttention().build((None, None, None, None))
    with pytest.raises(ValueError, match=r"^a and b must have the same shape, got a \(1, 8, 8, 3\) and b"):
        metrics.psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 9, 3)))
    with pytest.raises(ValueError, match=r"^a must be at least 11 x 11 pixels"):
        metrics.ssim(np.zeros((1, 8, 12, 3)), np.zeros((1, 8, 12, 3)))


def test_layers_images_keeps_no_checker_of_its_own():
    from tfdehaze.layers import images

    assert not hasattr(images, "check_images")  # the one image checker is tfdehaze.check.check_image


@pytest.mark.parametrize("extra", range(9))
def test_center_crop_numpy_eager_and_graph_agree(extra):
    big = np.arange((5 + extra) * (6 + extra) * 2).reshape(5 + extra, 6 + extra, 2)
    offset = int(round(extra / 2))  # Python's round: half to even, as torchvision's CenterCrop
    expected = big[offset:offset + 5, offset:offset + 6]
    np.testing.assert_array_equal(check.center_crop_to(big, 5, 6), expected)
    np.testing.assert_array_equal(check.center_crop_to(tf.constant(big), 5, 6).numpy(), expected)
    graph = tf.function(lambda x, h, w: check.center_crop_to(x, h, w),
                        input_signature=[tf.TensorSpec(None, tf.int64), tf.TensorSpec([], tf.int32),
                                         tf.TensorSpec([], tf.int32)])
    np.testing.assert_array_equal(graph(big, 5, 6).numpy(), expected)
    np.testing.assert_array_equal(check.center_crop_to(big[None], 5, 6)[0], expected)  # batched
    with pytest.raises(tf.errors.InvalidArgumentError, match="is larger than"):
        graph(big, 6 + extra, 6)
