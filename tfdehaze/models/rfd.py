"""RFD: rich feature distillation with a feature affinity module (Mitheran et al.,
"Rich Feature Distillation with Feature Affinity Module for Efficient Image Dehazing").

- `MCFSRCNN`, the teacher (§3.1, eqs. 2-3, Fig. 2): one FSRCNN branch per RGB channel (`FSRCNNBranch`: d = 56,
  s = 12, m = 4, PReLU; 5x5 feature extraction, 1x1 shrink, m 3x3 mapping layers, 1x1 expand, 9x9 stride-2
  transposed convolution), the three outputs concatenated. x2 super-resolution of the clear image:
  (N, H, W, 3) -> (N, 2H, 2W, 3). ``separable=True`` is the DSC-MC-FSRCNN variant (Table 3): shrink, mapping and
  expand layers are depthwise-separable (a depthwise conv with bias, then a 1x1 pointwise conv with bias).
- `RFDStudent`, the dehazer (§3.2, eqs. 4-6, Fig. 3; the authors' code): a 16-channel FFA-Net with 3 groups of
  6 `tfdehaze.layers.FFABlock` (each group closed by a conv with a skip around it), channel-attention fusion of the
  three group outputs, pixel attention, conv 16 -> 16, conv 16 -> 3, plus the input. (N, H, W, 3) -> (N, H, W, 3).

Registered names (`tfdehaze.registry.MODELS`):

=====================  ===========================================================================================
``rfd-teacher``        `MCFSRCNN` with ``separable=True``: the DSC-MC-FSRCNN the authors distilled from (the
                       framework's "0.122M" of Table 5 is the 0.096M student + "26K new parameters" = this
                       teacher's 26.45K of Table 3; depthwise-separable, as the authors
                       trained it). 26,451 weights.
``rfd-teacher-plain``  `MCFSRCNN` with ``separable=False``: MC-FSRCNN of Table 1 (38.42K). 38,427 weights.
``rfd``                `RFDStudent` (Table 5 "Ours [Student]", 0.096M). 96,007 weights.
=====================  ===========================================================================================

Both models are called ``model(x, training=None, return_features=False)`` and return ``{"dehazed": y}`` (for the
teacher ``y`` is its x2 SR output, so one distillation step serves both), plus ``"features"``, a list of NHWC maps,
when ``return_features``. Which maps are listed is the constructor argument ``feature_taps`` (names or indices into
`MCFSRCNN.tap_names` / `RFDStudent.tap_names`); the default, ``("output",)``, is what the authors' code distils: the
teacher's 3-channel x2 SR output against the student's 3-channel dehazed output. Intermediate taps are there
for the paper's "features at each scale":

- teacher ``extract``, ``shrink``, ``map1`` ... ``map{m}``, ``expand``: each the PReLU output of that stage, the three
  branches concatenated in R, G, B order, at the teacher's INPUT resolution (N, H, W, 3*width): 168 channels for
  extract/expand, 36 for shrink and the maps. ``output``: the SR image (N, 2H, 2W, 3).
- student ``pre`` (the 3 -> 16 conv), ``group1`` ... ``group3`` (each group's output, skip included), ``fused`` (the
  attention-weighted sum), ``attention`` (after pixel attention), ``post`` (after conv 16 -> 16), all (N, H, W, 16);
  ``output`` (N, H, W, 3), the dehazed image.

Pooling to a common grid is the loss's business (`tfdehaze.losses.affinity`): the teacher's output is at 2H, so it
is pooled by 8 and the student's by 4; an intermediate teacher tap is at H, so pair it with ``teacher_pool=4``.

Any H, W: both networks are stride 1 up to the teacher's stride-2 transposed convolution (output exactly 2H x 2W),
so no padding is needed. Images are float32 in [0, 1], NHWC, RGB; outputs are not clipped. The student does not
normalise its input with FFA-Net's mean/std (here: [0, 1] input, as every tfdehaze model).

Examples:
    >>> import tensorflow as tf
    >>> teacher = MCFSRCNN()
    >>> out = teacher(tf.zeros([1, 9, 7, 3]), return_features=True)
    >>> tuple(out["dehazed"].shape), [tuple(f.shape) for f in out["features"]]
    ((1, 18, 14, 3), [(1, 18, 14, 3)])
    >>> teacher.count_params(), count_parameters(MCFSRCNN(separable=False)), count_parameters(RFDStudent())
    (26451, 38427, 96007)
    >>> student = RFDStudent(feature_taps=["group3", -1])
    >>> [tuple(f.shape) for f in student(tf.zeros([1, 9, 7, 3]), return_features=True)["features"]]
    [(1, 9, 7, 16), (1, 9, 7, 3)]
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tfdehaze.check import check_image
from tfdehaze.layers.attention import ChannelAttention
from tfdehaze.layers.pixel_attention import FFABlock, PixelAttention
from tfdehaze.precision import Float32Boundary, to_float32
from tfdehaze.registry import MODELS

DEFAULT_TAPS = ("output",)
CHANNEL_NAMES = ("r", "g", "b")

# The paper's parameter counts, printed with 4 significant figures (so they carry a rounding error of up to half a unit
# of the last digit, or a whole unit if truncated, e.g. 38,427 printed as 38.42K).
PAPER_PARAMETERS = {
    "rfd-teacher-plain": (38_420, "Table 1/3: MC-FSRCNN (and ReLU-MC-FSRCNN), 38.42K"),
    "rfd-teacher": (26_450, "Table 3/4: DSC-MC-FSRCNN, 26.45K"),
    "rfd": (96_000, "Table 5: Ours [Student], 0.096M"),
}


def _he():
    # FSRCNN (Dong et al. 2016): He et al.'s initialisation (designed for PReLU) for the convolutions.
    return keras.initializers.HeNormal()


def _prelu(name):
    # PyTorch's nn.PReLU(C): one slope per channel, initialised 0.25 (Keras' default would be 0). Per-channel
    # slopes are what give Table 1's 38.42K (a shared slope would give 37,932).
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name)


def _resolve_taps(taps, names: Sequence[str], who: str) -> list[str]:
    """``feature_taps`` (None, a name, an index or a sequence of those) -> a list of tap names."""
    if taps is None:
        taps = DEFAULT_TAPS
    if isinstance(taps, (str, int)):
        taps = [taps]
    resolved = []
    for tap in taps:
        if isinstance(tap, bool):
            raise ValueError(f"{who} feature tap {tap!r}: give a name or an index")
        if isinstance(tap, int):
            if not -len(names) <= tap < len(names):
                raise ValueError(f"{who} feature tap index {tap} out of range for taps {list(names)}")
            resolved.append(names[tap])
        elif tap in names:
            resolved.append(tap)
        else:
            raise ValueError(f"unknown {who} feature tap {tap!r}; known taps (or their indices): {list(names)}")
    return resolved


def count_parameters(model: keras.Model, input_shape: Sequence[int] = (1, 16, 16, 3)) -> int:
    """``model.count_params()``, after calling the model once on zeros of ``input_shape`` if it has no weights yet.

    Examples:
        >>> count_parameters(RFDStudent(filters=8, blocks=1, groups=1))
        2851
    """
    if not model.weights:
        model(tf.zeros(input_shape), training=False)
    return int(model.count_params())


def parameter_report(names: Sequence[str] = ("rfd-teacher-plain", "rfd-teacher", "rfd")) -> str:
    """A printable table: registered name, our parameter count, the paper's figure and where it is printed.

    Examples:
        >>> print(parameter_report(["rfd-teacher"]))  # doctest: +NORMALIZE_WHITESPACE
        model                  ours    paper   diff  source
        rfd-teacher          26,451   26,450    +1  ...
    """
    lines = [f"{'model':<18} {'ours':>8} {'paper':>8} {'diff':>6}  source"]
    for name in names:
        ours = count_parameters(MODELS.build(name))
        paper, source = PAPER_PARAMETERS[name]
        lines.append(f"{name:<18} {ours:>8,} {paper:>8,} {ours - paper:>+6}  {source}")
    return "\n".join(lines)


@keras.saving.register_keras_serializable(package="tfdehaze")
class FSRCNNBranch(keras.layers.Layer):
    """FSRCNN (Dong et al., ECCV 2016) on one channel: FSRCNN_c of RFD eq. (2).

        extract  conv 5x5, 1 -> d, PReLU
        shrink   conv 1x1, d -> s, PReLU
        map_i    conv 3x3, s -> s, PReLU        (i = 1 .. m)
        expand   conv 1x1, s -> d, PReLU
        deconv   transposed conv 9x9, stride ``scale``, d -> 1, initialised N(0, 0.001)

    With ``separable``, shrink, the maps and expand are depthwise-separable: DepthwiseConv2D (k x k, bias) then a 1x1
    Conv2D (bias), as a PyTorch depthwise + pointwise pair (that is what makes Table 3's 26.45K: 8,817 per branch).
    Extraction (one input channel) and the transposed convolution stay plain in both variants. Zero "same" padding.

    Args:
        d, s, m: FSRCNN's widths and number of mapping layers (56, 12, 4).
        scale: upscaling factor of the transposed convolution (2).
        separable: depthwise-separable shrink/map/expand (DSC-MC-FSRCNN).

    Call: ``branch(x, return_all=False)`` with x (N, H, W, 1) -> (N, scale*H, scale*W, 1), or with ``return_all``
    a dict of every stage: ``extract`` (N, H, W, d), ``shrink``, ``map1`` ... (N, H, W, s), ``expand`` (N, H, W, d),
    ``output``.

    Examples:
        >>> import tensorflow as tf
        >>> branch = FSRCNNBranch(d=8, s=4, m=1)
        >>> tuple(branch(tf.zeros([1, 5, 6, 1])).shape)
        (1, 10, 12, 1)
        >>> sorted(branch(tf.zeros([1, 5, 6, 1]), return_all=True))
        ['expand', 'extract', 'map1', 'output', 'shrink']
    """

    def __init__(self, d=56, s=12, m=4, scale=2, separable=False, **kwargs):
        super().__init__(**kwargs)
        for key, value in (("d", d), ("s", s), ("scale", scale)):
            if int(value) != value or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if int(m) != m or m < 0:
            raise ValueError(f"m must be a non-negative integer, got {m!r}")
        self.d, self.s, self.m, self.scale, self.separable = int(d), int(s), int(m), int(scale), bool(separable)
        self.extract = keras.layers.Conv2D(self.d, 5, padding="same", kernel_initializer=_he(), name="extract")
        self.extract_act = _prelu("extract_act")
        self.shrink = self._conv(self.s, 1, "shrink")
        self.shrink_act = _prelu("shrink_act")
        for i in range(1, self.m + 1):
            setattr(self, f"map{i}", self._conv(self.s, 3, f"map{i}"))
            setattr(self, f"map{i}_act", _prelu(f"map{i}_act"))
        self.expand = self._conv(self.d, 1, "expand")
        self.expand_act = _prelu("expand_act")
        self.deconv = keras.layers.Conv2DTranspose(
            1, 9, strides=self.scale, padding="same", name="deconv",
            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.001))

    def _conv(self, filters, kernel, name):
        if not self.separable:
            return keras.layers.Conv2D(filters, kernel, padding="same", kernel_initializer=_he(), name=name)
        return keras.Sequential([
            keras.layers.DepthwiseConv2D(kernel, padding="same", depthwise_initializer=_he(), name="depthwise"),
            keras.layers.Conv2D(filters, 1, kernel_initializer=_he(), name="pointwise")], name=name)

    def stage_names(self):
        """The stages in order: extract, shrink, map1 ... map{m}, expand, output."""
        return ["extract", "shrink", *[f"map{i}" for i in range(1, self.m + 1)], "expand", "output"]

    def build(self, input_shape):
        shape = (None, None, None, 1)
        for name in self.stage_names()[:-1]:
            layer = getattr(self, name)
            layer.build(shape)
            width = self.s if name not in ("extract", "expand") else self.d
            shape = (None, None, None, width)
            getattr(self, f"{name}_act").build(shape)
        self.deconv.build(shape)

    def call(self, x, return_all=False):
        stages = {}
        for name in self.stage_names()[:-1]:
            x = getattr(self, f"{name}_act")(getattr(self, name)(x))
            stages[name] = x
        stages["output"] = self.deconv(x)
        return stages if return_all else stages["output"]

    def get_config(self):
        return {**super().get_config(), "d": self.d, "s": self.s, "m": self.m, "scale": self.scale,
                "separable": self.separable}


@MODELS.register("rfd-teacher", separable=True,
                 description="RFD teacher: DSC-MC-FSRCNN (one depthwise-separable FSRCNN per RGB channel), x2 SR of "
                             "the clear image, 26.45K (Table 3), as the authors distilled from")
@MODELS.register("rfd-teacher-plain", separable=False,
                 description="RFD teacher without depthwise-separable convs: MC-FSRCNN, x2 SR, 38.42K (Table 1)")
@keras.saving.register_keras_serializable(package="tfdehaze")
class MCFSRCNN(Float32Boundary, keras.Model):
    """Multi-channel FSRCNN, RFD's super-resolution teacher (§3.1, eqs. 2-3, Fig. 2).

        O^c = FSRCNN_c(I^c), c in (R, G, B)        (2)   one `FSRCNNBranch` per channel, no shared weights
        O   = Concat(O^c)                          (3)

    Trained alone with MSE (eq. 13) on (clear image downscaled x2 -> clear image), then frozen; in distillation it
    sees the full clear image and returns its x2 super-resolution.

    Args:
        d, s, m, scale: FSRCNN's widths, mapping depth and upscaling factor (56, 12, 4, 2).
        separable: depthwise-separable shrink/map/expand (True: DSC-MC-FSRCNN, ``rfd-teacher``; False: MC-FSRCNN,
            ``rfd-teacher-plain``).
        feature_taps: which maps ``return_features`` lists, names or indices into `tap_names` (see the module
            docstring); default ``("output",)``.

    Call: ``model(clear, training=None, return_features=False)``, clear (N, H, W, 3) in [0, 1] ->
    ``{"dehazed": (N, scale*H, scale*W, 3)}`` (the SR image, unclipped) ``+ {"features": [...]}``.
    Sub-layers: ``branch_r``, ``branch_g``, ``branch_b``.

    Examples:
        >>> import tensorflow as tf
        >>> teacher = MCFSRCNN(d=8, s=4, m=1, feature_taps=("expand", "output"))
        >>> out = teacher(tf.zeros([2, 8, 6, 3]), return_features=True)
        >>> tuple(out["dehazed"].shape), [tuple(f.shape) for f in out["features"]]
        ((2, 16, 12, 3), [(2, 8, 6, 24), (2, 16, 12, 3)])
    """

    def __init__(self, d=56, s=12, m=4, scale=2, separable=True, feature_taps=None, **kwargs):
        super().__init__(**kwargs)
        for c in CHANNEL_NAMES:
            setattr(self, f"branch_{c}", FSRCNNBranch(d=d, s=s, m=m, scale=scale, separable=separable,
                                                      name=f"branch_{c}"))
        self.d, self.s, self.m, self.scale, self.separable = int(d), int(s), int(m), int(scale), bool(separable)
        self.tap_names = tuple(self.branch_r.stage_names())
        self.feature_taps = _resolve_taps(feature_taps, self.tap_names, "MCFSRCNN")

    def build(self, input_shape):
        for c in CHANNEL_NAMES:
            getattr(self, f"branch_{c}").build((None, None, None, 1))

    def call(self, clear, training=None, return_features=False):
        clear = check_image(clear, "clear", channels=3)
        need_all = return_features and any(tap != "output" for tap in self.feature_taps)
        stages = [getattr(self, f"branch_{c}")(clear[..., i:i + 1], return_all=True)
                  if need_all else {"output": getattr(self, f"branch_{c}")(clear[..., i:i + 1])}
                  for i, c in enumerate(CHANNEL_NAMES)]
        sr = tf.concat([stage["output"] for stage in stages], axis=-1)
        outputs = {"dehazed": sr}
        if return_features:
            outputs["features"] = [sr if tap == "output" else tf.concat([stage[tap] for stage in stages], axis=-1)
                                   for tap in self.feature_taps]
        return outputs

    def get_config(self):
        return {**super().get_config(), "d": self.d, "s": self.s, "m": self.m, "scale": self.scale,
                "separable": self.separable, "feature_taps": list(self.feature_taps)}


@MODELS.register("rfd", description="RFD student: 16-channel FFA-Net (3 groups x 6 blocks, 3x3), 0.096M (Table 5); "
                                    "distilled from rfd-teacher by feature affinity")
@keras.saving.register_keras_serializable(package="tfdehaze")
class RFDStudent(Float32Boundary, keras.Model):
    """RFD's student dehazer (§3.2, Fig. 3): a narrow FFA-Net, as in the authors' code.

        x0 = pre(I)                                          conv 3x3, 3 -> F
        g_k = Group_k(g_{k-1}) (g_0 = x0), k = 1..G          Group(x) = conv(FFABlock^B(x)) + x   ("outer" block)
        w  = sigmoid(W2 ReLU(W1 GAP([g_1, ..., g_G])))       1x1 convs G*F -> max(F // 16, 1) -> G*F (eqs. 4-5)
        f  = sum_k w_k o g_k                                 w split into G blocks of F channels
        J  = post2(post1(PA(f))) + I                         PA eq. (6); post1 F -> F, post2 F -> 3, 3x3

    The fusion is `ChannelAttention` with ``reduction = 16 * groups`` applied to the concatenation and the G chunks of
    its output summed (= FFA-Net's ``w.view(-1, G, F)`` weighted sum). All convolutions have biases and zero "same"
    padding; no activation between post1 and post2 (FFA-Net).

    Args:
        filters: F (16).
        kernel_size: of every convolution but the 1x1 attention layers (3).
        groups, blocks: G outer blocks of B inner `FFABlock` (3, 6).
        reduction: of the inner channel and pixel attentions (8: 16 -> 2).
        feature_taps: names or indices into `tap_names` (see the module docstring); default ``("output",)``.

    Call: ``model(hazy, training=None, return_features=False)``, hazy (N, H, W, 3) in [0, 1] ->
    ``{"dehazed": (N, H, W, 3)}`` (unclipped) ``+ {"features": [...]}``. Any H, W (stride 1 throughout).
    Sub-layers: ``pre``, ``group1`` ... (keras.Sequential of ``block1`` ... and ``conv``), ``fusion_attention``,
    ``pixel_attention``, ``post1``, ``post2``.

    Examples:
        >>> import tensorflow as tf
        >>> student = RFDStudent(filters=8, groups=2, blocks=1, reduction=4)
        >>> tuple(student(tf.zeros([1, 9, 7, 3]))["dehazed"].shape)
        (1, 9, 7, 3)
    """

    #: Channel and pixel attention pool over the whole image: tiled inference approximates them per tile.
    global_statistics = ("channel_attention",)
    tile_multiple = 1

    def __init__(self, filters=16, kernel_size=3, groups=3, blocks=6, reduction=8, feature_taps=None, **kwargs):
        super().__init__(**kwargs)
        for key, value in (("filters", filters), ("kernel_size", kernel_size), ("groups", groups),
                           ("blocks", blocks), ("reduction", reduction)):
            if int(value) != value or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.groups, self.blocks, self.reduction = int(groups), int(blocks), int(reduction)

        def conv(width, name):
            return keras.layers.Conv2D(width, self.kernel_size, padding="same", name=name)

        self.pre = conv(self.filters, "pre")
        for g in range(1, self.groups + 1):
            layers = [FFABlock(self.kernel_size, self.reduction, name=f"block{b}") for b in range(1, self.blocks + 1)]
            setattr(self, f"group{g}", keras.Sequential([*layers, conv(self.filters, "conv")], name=f"group{g}"))
        self.fusion_attention = ChannelAttention(reduction=16 * self.groups, name="fusion_attention")
        self.pixel_attention = PixelAttention(reduction=self.reduction, name="pixel_attention")
        self.post1 = conv(self.filters, "post1")
        self.post2 = conv(3, "post2")
        self.tap_names = ("pre", *[f"group{g}" for g in range(1, self.groups + 1)], "fused", "attention", "post",
                          "output")
        self.feature_taps = _resolve_taps(feature_taps, self.tap_names, "RFDStudent")

    def build(self, input_shape):
        shape = (None, None, None, self.filters)
        self.pre.build((None, None, None, 3))
        for g in range(1, self.groups + 1):
            getattr(self, f"group{g}").build(shape)
        self.fusion_attention.build((None, None, None, self.filters * self.groups))
        self.pixel_attention.build(shape)
        self.post1.build(shape)
        self.post2.build(shape)

    def call(self, hazy, training=None, return_features=False):
        hazy = check_image(hazy, "hazy", channels=3)
        taps = {"pre": self.pre(hazy)}
        x = taps["pre"]
        outs = []
        for g in range(1, self.groups + 1):
            x = getattr(self, f"group{g}")(x, training=training) + x
            taps[f"group{g}"] = x
            outs.append(x)
        weighted = self.fusion_attention(tf.concat(outs, axis=-1))
        taps["fused"] = tf.add_n(tf.split(weighted, self.groups, axis=-1))
        taps["attention"] = self.pixel_attention(taps["fused"])
        taps["post"] = self.post1(taps["attention"])
        taps["output"] = to_float32(self.post2(taps["post"])) + hazy
        outputs = {"dehazed": taps["output"]}
        if return_features:
            outputs["features"] = [taps[tap] for tap in self.feature_taps]
        return outputs

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "groups": self.groups, "blocks": self.blocks, "reduction": self.reduction,
                "feature_taps": list(self.feature_taps)}
