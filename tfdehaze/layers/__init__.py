from tfdehaze.layers.normalization import InstanceNormalization  # noqa: F401
from tfdehaze.layers.attention import ChannelAttention, ResidualChannelAttention  # noqa: F401
from tfdehaze.layers.fusion import MultiLevelFusion  # noqa: F401
from tfdehaze.layers.implicit import IMBlock, MLEBlock, SharedSeparableConv2D  # noqa: F401
from tfdehaze.layers.guided_filter import GuidedFilter, box_filter, guided_filter  # noqa: F401
