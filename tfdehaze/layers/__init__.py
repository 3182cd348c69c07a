"""Building blocks, each a Keras layer with get_config, registered for `keras.saving`."""
from tfdehaze.layers.attention import ChannelAttention, ResidualChannelAttention
from tfdehaze.layers.fusion import MultiLevelFusion
from tfdehaze.layers.guided_filter import GuidedFilter, box_filter, guided_filter
from tfdehaze.layers.implicit import IMBlock, MLEBlock, SharedSeparableConv2D
from tfdehaze.layers.normalization import InstanceNormalization

__all__ = ["ChannelAttention", "GuidedFilter", "IMBlock", "InstanceNormalization", "MLEBlock", "MultiLevelFusion",
           "ResidualChannelAttention", "SharedSeparableConv2D", "box_filter", "guided_filter"]
