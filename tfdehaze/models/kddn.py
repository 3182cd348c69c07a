"""KDDN (Hong et al., "Distilling Image Dehazing with Heterogeneous Task Imitation", CVPR 2020, §3.1, Fig. 2).

- `KDDNTeacher`: an autoencoder trained alone to reconstruct clean images (eq. 1, L_T = ||J - T(J)||_1), then frozen.
- `KDDNStudent`: the dehazing network, same down/up path, a backbone of residual-in-residual groups of `SWRCAB` s; it
  is trained with L1 + perceptual + (W)FMIL (eqs. 2-6) to mimic the teacher's intermediate features.

Both networks::

    down   Conv 3x3 stride 2 + ReLU, Conv 3x3 stride 2 + ReLU            (N, H/4, W/4, filters)
    body   teacher: ``res_blocks`` residual blocks Conv-ReLU-Conv-Add (no batch norm)
           student: ``groups`` `ResidualInResidualGroup` s of ``blocks`` SWRCABs each
    up     2 x (Conv 3x3 + ReLU, bilinear upsampling x2)                  (N, H, W, filters)
    out    Conv 3x3 -> 3 channels, then (1 + tanh) / 2

Decisions where the paper is silent or differs from the public code:

- Images are float32 in [0, 1] in and out (trained on [0, 1]; the public code's [-1, 1] tanh teacher
  reconstructed blurry images). The paper's final tanh is kept, rescaled to [0, 1]: ``(1 + tanh(z)) / 2``
  (= sigmoid(2z)), so outputs lie in (0, 1) and no clipping is needed. The input enters the first conv as it is.
- Any H, W: the input is reflect-padded to a multiple of 4 (`pad_to_multiple`) and the output cropped back.
  Feature maps are those of the padded image, (N, ceil(H/4), ceil(W/4), filters) (for H, W multiples of 4 exactly
  H/4 x W/4); teacher and student pad a pair of images identically, so their features stay aligned.
- Feature taps (the mimicking pairs of §4.1 "m = 2, 4, 6"): ``feature_taps`` are 1-based indices of the
  teacher's residual blocks / the student's RIR groups whose *outputs* are returned, in the order given. The public
  unofficial code indexed them zero-based and silently lost the last pair; here an index outside 1..n raises.
- No extra long skip around the whole student backbone: each RIR group has its own skip (Fig. 2).
- Convolutions use Keras' default initialisers (Glorot uniform, zero bias); the paper does not say.
"""
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfdehaze.check import check_image
from tfdehaze.layers.images import pad_to_multiple
from tfdehaze.layers.swrcab import ResidualInResidualGroup
from tfdehaze.precision import Float32Boundary
from tfdehaze.registry import MODELS

STRIDE = 4  # two stride-2 convolutions


def _positive_int(value, key):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


def _check_taps(taps, n, what):
    """feature_taps as a tuple of 1-based indices into 1..n, non-empty and without repeats."""
    if isinstance(taps, int) and not isinstance(taps, bool):
        taps = (taps,)
    try:
        taps = tuple(taps)
    except TypeError:
        raise ValueError(f"feature_taps must be a sequence of 1-based {what} indices, got {taps!r}") from None
    bad = [t for t in taps if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= n]
    if not taps or bad:
        raise ValueError(f"feature_taps are 1-based indices of the {what}s, each in 1..{n} (the network has {n}); "
                         f"got {taps!r}" + (f", invalid: {bad!r}" if bad else ""))
    if len(set(taps)) != len(taps):
        raise ValueError(f"feature_taps must not repeat an index, got {taps!r}")
    return taps


@keras.saving.register_keras_serializable(package="tfdehaze")
class KDDNResidualBlock(keras.layers.Layer):
    """The teacher's residual block (KDDN §3.1): ``y = conv2(ReLU(conv1(x))) + x``, 3x3 convs C -> C, no batch norm.

    Shapes: (N, H, W, C) -> (N, H, W, C).

    Examples:
        >>> import numpy as np
        >>> tuple(KDDNResidualBlock()(np.zeros((1, 5, 7, 4), np.float32)).shape)
        (1, 5, 7, 4)
    """

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(f"KDDNResidualBlock needs a known channel count, got {tuple(input_shape)}")
        c = int(input_shape[-1])
        self.conv1 = keras.layers.Conv2D(c, 3, padding="same", activation="relu", name="conv1", dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(c, 3, padding="same", name="conv2", dtype=self.dtype_policy)
        self.conv1.build((None, None, None, c))
        self.conv2.build((None, None, None, c))

    def call(self, x):
        return self.conv2(self.conv1(x)) + x

    def compute_output_shape(self, input_shape):
        return input_shape


class _Autoencoder(Float32Boundary, keras.Model):
    """Shared down/up path of the teacher and the student; subclasses add ``stage1`` ... ``stage{n}``."""

    _stage_kind = "stage"  # what a backbone stage is called in messages
    global_statistics: tuple[str, ...] = ()  # `tfdehaze.inference.dehaze_tiled`: none (teacher)
    tile_multiple = STRIDE

    def __init__(self, filters, stages, feature_taps, **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters")
        self._stages = stages
        self.feature_taps = _check_taps(feature_taps, self._stages, self._stage_kind)
        conv = keras.layers.Conv2D
        self.down1 = conv(self.filters, 3, strides=2, padding="same", activation="relu", name="down1")
        self.down2 = conv(self.filters, 3, strides=2, padding="same", activation="relu", name="down2")
        for i in (1, 2):
            setattr(self, f"up{i}", keras.Sequential(
                [conv(self.filters, 3, padding="same", activation="relu"),
                 keras.layers.UpSampling2D(2, interpolation="bilinear")], name=f"up{i}"))
        self.last = conv(3, 3, padding="same", name="last")

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of each tapped feature map, one per ``feature_taps`` entry (for 1x1 adapters)."""
        return (self.filters,) * len(self.feature_taps)

    def stage(self, i: int) -> keras.layers.Layer:
        """The i-th backbone stage (1-based), as ``feature_taps`` counts them."""
        return getattr(self, f"stage{i}")

    def build(self, input_shape):
        shape = (None, None, None, input_shape[-1] if input_shape[-1] is not None else 3)
        self.down1.build(shape)
        shape = (None, None, None, self.filters)
        self.down2.build(shape)
        for i in range(1, self._stages + 1):
            self.stage(i).build(shape)
        self.up1.build(shape)
        self.up2.build(shape)
        self.last.build(shape)

    def call(self, x, training=None, return_features=False):
        x = check_image(x, "images", channels=3)
        padded, crop = pad_to_multiple(x, STRIDE)
        h = self.down2(self.down1(padded))
        tapped = {}
        for i in range(1, self._stages + 1):
            h = self.stage(i)(h)
            if i in self.feature_taps:
                tapped[i] = h
        y = self.last(self.up2(self.up1(h)))
        outputs = {"dehazed": crop(0.5 * (tf.tanh(y) + 1.0))}
        if return_features:
            outputs["features"] = [tapped[i] for i in self.feature_taps]
        return outputs

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "feature_taps": list(self.feature_taps)}


@MODELS.register("kddn-teacher", description="KDDN teacher: autoencoder of clean images, 6 residual blocks, "
                 "64 channels (feature taps: blocks 2, 4, 6)")
@keras.saving.register_keras_serializable(package="tfdehaze")
class KDDNTeacher(_Autoencoder):
    """KDDN's teacher autoencoder (§3.1, Fig. 2, trained with eq. 1 on clean images), outputs in (0, 1).

    down (2 x 3x3 stride-2 conv + ReLU) - ``res_blocks`` `KDDNResidualBlock` s - up (2 x 3x3 conv + ReLU + bilinear
    x2) - 3x3 conv - (1 + tanh) / 2. See the module docstring for the decisions.

    Args:
        filters: channels of every hidden convolution (64).
        res_blocks: residual blocks in the backbone (6).
        feature_taps: 1-based indices of the residual blocks whose outputs ``return_features`` gives ((2, 4, 6)).

    Call: ``model(images, training=None, return_features=False)``, images (N, H, W, 3) in [0, 1], any H, W. Returns
    ``{"dehazed": (N, H, W, 3)}`` (the reconstruction; the key is shared with the student so the training steps read
    both alike) and, with ``return_features=True``, ``"features"``: a list, one (N, ceil(H/4), ceil(W/4), filters)
    map per tap. Sub-layers: ``down1``, ``down2``, ``stage1`` ... (also `stage`), ``up1``, ``up2``, ``last``.

    Examples:
        >>> import numpy as np
        >>> teacher = KDDNTeacher(filters=8)
        >>> out = teacher(np.zeros((1, 37, 50, 3), np.float32), return_features=True)
        >>> tuple(out["dehazed"].shape), [tuple(f.shape) for f in out["features"]]
        ((1, 37, 50, 3), [(1, 10, 13, 8), (1, 10, 13, 8), (1, 10, 13, 8)])
        >>> teacher.feature_taps, teacher.feature_channels, teacher.stage(6) is teacher.stage6
        ((2, 4, 6), (8, 8, 8), True)
    """

    _stage_kind = "residual block"

    def __init__(self, filters: int = 64, res_blocks: int = 6, feature_taps: Sequence[int] = (2, 4, 6), **kwargs):
        super().__init__(filters, _positive_int(res_blocks, "res_blocks"), feature_taps, **kwargs)
        self.res_blocks = self._stages
        for i in range(1, self.res_blocks + 1):  # attributes, not a list: tf.train.Checkpoint tracks them
            setattr(self, f"stage{i}", KDDNResidualBlock(name=f"stage{i}"))

    def get_config(self):
        return {**super().get_config(), "res_blocks": self.res_blocks}


@MODELS.register("kddn", description="KDDN student (dehazing network): 6 RIR groups x 3 SWRCAB, 64 channels "
                 "(feature taps: groups 2, 4, 6)")
@keras.saving.register_keras_serializable(package="tfdehaze")
class KDDNStudent(_Autoencoder):
    """KDDN's dehazing network (§3.1, Fig. 2): the teacher's down/up path around ``groups``
    `ResidualInResidualGroup` s of ``blocks`` `SWRCAB` s each; outputs in (0, 1).

    Args:
        filters: channels of every hidden convolution (64).
        groups: RIR groups in the backbone (6).
        blocks: SWRCABs per group (3).
        reduction: reduction ratio of the SWRCAB channel attention (1).
        feature_taps: 1-based indices of the RIR groups whose outputs ``return_features`` gives ((2, 4, 6)).

    Call: ``model(hazy, training=None, return_features=False)``, hazy (N, H, W, 3) in [0, 1], any H, W. Returns
    ``{"dehazed": (N, H, W, 3)}`` and, with ``return_features=True``, ``"features"``: a list, one
    (N, ceil(H/4), ceil(W/4), filters) map per tap (before any 1x1 adapter, which the distillation step owns).
    Sub-layers: ``down1``, ``down2``, ``stage1`` ... ``stage{groups}`` (the RIR groups), ``up1``, ``up2``, ``last``.

    Examples:
        >>> import numpy as np
        >>> student = KDDNStudent(filters=8, groups=2, blocks=1, feature_taps=(1, 2))
        >>> out = student(np.zeros((2, 32, 36, 3), np.float32), return_features=True)
        >>> tuple(out["dehazed"].shape), [tuple(f.shape) for f in out["features"]]
        ((2, 32, 36, 3), [(2, 8, 9, 8), (2, 8, 9, 8)])
        >>> KDDNStudent(groups=6, feature_taps=(0, 2, 4))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: feature_taps are 1-based indices of the RIR groups, each in 1..6 ...; got (0, 2, 4), invalid: [0]
    """

    _stage_kind = "RIR group"
    global_statistics = ("channel_attention",)  # SWRCAB pools over the image: tiles approximate it

    def __init__(self, filters: int = 64, groups: int = 6, blocks: int = 3, reduction: int = 1,
                 feature_taps: Sequence[int] = (2, 4, 6), **kwargs):
        super().__init__(filters, _positive_int(groups, "groups"), feature_taps, **kwargs)
        self.groups = self._stages
        self.blocks = _positive_int(blocks, "blocks")
        self.reduction = _positive_int(reduction, "reduction")
        for i in range(1, self.groups + 1):  # attributes, not a list: tf.train.Checkpoint tracks them
            setattr(self, f"stage{i}", ResidualInResidualGroup(blocks=self.blocks, reduction=self.reduction,
                                                               name=f"stage{i}"))

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "blocks": self.blocks, "reduction": self.reduction}
