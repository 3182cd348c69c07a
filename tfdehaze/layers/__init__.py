"""Building blocks, each a Keras layer with get_config, registered for `keras.saving`, on NHWC tensors.

The guided filter also comes as functions (`guided_filter`, `box_filter`), the layer `GuidedFilter` wrapping the
first; each class documents its shapes, its paper and equations, and a runnable example.

Examples:
    >>> import tensorflow as tf
    >>> from tfdehaze.layers import ChannelAttention, InstanceNormalization
    >>> x = tf.random.uniform([2, 16, 16, 8])
    >>> ChannelAttention(reduction=4)(InstanceNormalization()(x)).shape
    TensorShape([2, 16, 16, 8])
"""
from tfdehaze.layers.attention import ChannelAttention, ResidualChannelAttention
from tfdehaze.layers.dropout import SyncDropout
from tfdehaze.layers.fusion import MultiLevelFusion
from tfdehaze.layers.guided_filter import GuidedFilter, box_filter, guided_filter
from tfdehaze.layers.implicit import IMBlock, MLEBlock, SharedSeparableConv2D
from tfdehaze.layers.normalization import InstanceNormalization
from tfdehaze.layers.pixel_attention import FFABlock, PixelAttention
from tfdehaze.layers.swrcab import SWRCAB, ResidualInResidualGroup

__all__ = ["ChannelAttention", "FFABlock", "GuidedFilter", "IMBlock", "InstanceNormalization", "MLEBlock",
           "MultiLevelFusion", "PixelAttention", "ResidualChannelAttention", "ResidualInResidualGroup", "SWRCAB",
           "SharedSeparableConv2D", "SyncDropout", "box_filter", "guided_filter"]
