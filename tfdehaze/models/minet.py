"""MI-Net: multi-level implicit network ("Implicit Euler ODE networks for single-image dehazing", Shen et al.,
CVPRW 2020), as two Keras models built from the blocks of `tfdehaze.layers`:

- `MINet`: the network of the paper, with the ablations of its Table 2 as options (registered as ``minet``).
- `MINetOfficial`: the network of the authors' released RESIDE-ITS weights; its sub-layers are
  named after the checkpoint's modules so that `tfdehaze.convert` maps them one to one. Its weights are the preset
  ``minet-official`` (`PRESETS`): convert them once with ``python data_prep/convert_minet.py``, then
  ``tfdehaze.models.registry.load("minet-official")``.

Both take hazy RGB (N, H, W, 3) in [0, 1] and return {"dehazed": (N, H, W, 3)} on the [0, 1] scale, unclipped.
Any H, W: the input is reflect-padded to even size and the output cropped back.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tfdehaze.check import check_image
from tfdehaze.layers.attention import ChannelAttention, ResidualChannelAttention
from tfdehaze.layers.fusion import MultiLevelFusion
from tfdehaze.layers.images import pad_to_multiple
from tfdehaze.layers.implicit import IMBlock, MLEBlock, conv2d_same
from tfdehaze.layers.normalization import InstanceNormalization
from tfdehaze.models import registry
from tfdehaze.precision import Float32Boundary, to_float32
from tfdehaze.registry import MODELS

BLOCKS = ("im", "resblock-1", "resblock-T")
ATTENTIONS = ("rca", "ca", None)
FUSIONS = ("mlf", "concat", None)
_STRIDE = 2

PRESETS = {
    "minet-official": {
        "description": "MI-Net, the authors' released network and RESIDE-ITS weights (MINetOfficial)",
        "weights": "minet_official_its.weights.h5",
        "source": "the authors' released RESIDE-ITS checkpoint (minet_official_its.pth, DataParallel(MI_Net), "
                  "epoch 175); convert it once with "
                  "`python data_prep/convert_minet.py /path/to/minet_official_its.pth`",
        "score": "38.2 dB PSNR on 12 real SOTS-indoor pairs (hazy input 13.5 dB); the authors' own code gives the "
                 "same to 0.005 dB",
    },
}


def _dehaze(hazy: tf.Tensor, forward: Callable[[tf.Tensor], tf.Tensor]) -> dict[str, tf.Tensor]:
    """Check the input, reflect-pad it to the stride, run ``forward`` and crop the output back (float32)."""
    x, crop = pad_to_multiple(check_image(hazy, "hazy", channels=3), _STRIDE)
    return {"dehazed": crop(to_float32(forward(x)))}


def _conv_in_relu(filters: int, kernel: int, strides: int = 1, name: str | None = None) -> keras.Sequential:
    return keras.Sequential([keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False),
                             InstanceNormalization(), keras.layers.ReLU()], name=name)


@MODELS.register("minet", description="MI-Net, the paper's network (Table 2 ablations as options)")
@keras.saving.register_keras_serializable(package="tfdehaze")
class MINet(Float32Boundary, keras.Model):
    """MI-Net as in the paper ("Implicit Euler ODE networks for single-image dehazing", Shen et al., CVPRW 2020).

    Encoder (3x3 conv-IN-ReLU, 3x3 stride-2 conv-IN-ReLU); three levels, each an IM-block: T iterations of
    g_{k+1} = g_0 + eta f(g_k) (eq. 3, approximating the implicit Euler step of eq. 2; f = MLE block with the
    level's dilation, Fig. 2); multi-level fusion (MLF, eqs. 6-7); RCA-block (eqs. 8-9); decoder (4x4 stride-2
    transposed conv-IN-ReLU, 3x3 conv -> 3) added to the hazy input. The ablations of Table 2 are options.

    Args:
        filters: feature width (paper: 64).
        steps: T, iterations per IM-block (paper: 12). With block="resblock-T", the number of unshared residual
            blocks per level.
        dilations: dilation of each level's MLE block (paper: (1, 2, 5)).
        eta: IM-block step (1.0: the paper trades a small eta for instance norm).
        block: "im" (IM-blocks), "resblock-1" (one residual block x + eta f(x) per level, eq. 1) or "resblock-T"
            (T unshared residual blocks per level, Table 2).
        attention: "rca", "ca" (ordinary channel attention) or None.
        fusion: "mlf", "concat" (1x1 conv of [x1, x2, x3]) or None (x3 alone, Table 2).
        reduction: RCA / CA MLP reduction ratio.
        recompute: IM-blocks backpropagate by recomputation (training memory nearly flat in T, ~1.3x the
            time; see benchmarks/minet_memory.py).

    Shapes: ``model(hazy)``, hazy (N, H, W, 3) RGB in [0, 1], any H, W -> {"dehazed": (N, H, W, 3)}, [0, 1] scale,
    unclipped. Sub-layers: encoder, level1-3, fuse (unless fusion=None), refine (unless attention=None), decoder.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.models.minet import MINet
        >>> model = MINet(filters=8, steps=1)
        >>> model(tf.zeros([1, 16, 16, 3]))["dehazed"].shape
        TensorShape([1, 16, 16, 3])
        >>> model.level3.f.dilation, MINet(block="resblock-1").level1.steps
        (5, 1)
    """

    #: Instance norm uses per-image statistics: tiled inference (`tfdehaze.inference.dehaze_tiled`) approximates it.
    global_statistics = ("instance_norm",)
    tile_multiple = _STRIDE

    def __init__(self, filters: int = 64, steps: int = 12, dilations: Sequence[int] = (1, 2, 5), eta: float = 1.0,
                 block: str = "im", attention: str | None = "rca", fusion: str | None = "mlf", reduction: int = 16,
                 recompute: bool = False, **kwargs):
        super().__init__(**kwargs)
        if block not in BLOCKS or attention not in ATTENTIONS or fusion not in FUSIONS:
            raise ValueError(f"block/attention/fusion must be in {BLOCKS} / {ATTENTIONS} / {FUSIONS}, "
                             f"got {block!r} / {attention!r} / {fusion!r}")
        if len(dilations) != 3:
            raise ValueError(f"dilations must be three ints (one per level), got {dilations!r}")
        self.filters = int(filters)
        self.steps = int(steps)
        self.dilations = tuple(int(d) for d in dilations)
        self.eta = float(eta)
        self.block, self.attention, self.fusion = block, attention, fusion
        self.reduction = int(reduction)
        self.recompute = bool(recompute)

        self.encoder = keras.Sequential([_conv_in_relu(self.filters, 3, name="conv1"),
                                         _conv_in_relu(self.filters, 3, strides=_STRIDE, name="conv2")],
                                        name="encoder")
        self.level1, self.level2, self.level3 = (self._level(d, f"level{i + 1}")
                                                 for i, d in enumerate(self.dilations))
        if fusion == "mlf":
            self.fuse = MultiLevelFusion(name="mlf")
        elif fusion == "concat":
            self.fuse = keras.layers.Conv2D(self.filters, 1, name="concat_fusion")
        if attention == "rca":
            self.refine = ResidualChannelAttention(self.reduction, name="rca")
        elif attention == "ca":
            self.refine = ChannelAttention(self.reduction, name="ca")
        self.decoder = keras.Sequential([
            keras.layers.Conv2DTranspose(self.filters, 4, strides=_STRIDE, padding="same", use_bias=False),
            InstanceNormalization(), keras.layers.ReLU(),
            keras.layers.Conv2D(3, 3, padding="same")], name="decoder")

    def _level(self, dilation: int, name: str) -> keras.layers.Layer:
        def f(i=""):
            return MLEBlock(self.filters, dilation, name=f"f{i}")

        if self.block == "resblock-T":
            return keras.Sequential([IMBlock(f(i), steps=1, eta=self.eta, name=f"res{i}")
                                     for i in range(self.steps)], name=name)
        steps = 1 if self.block == "resblock-1" else self.steps
        return IMBlock(f(), steps=steps, eta=self.eta, recompute=self.recompute, name=name)

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        x1 = self.level1(self.encoder(x))
        x2 = self.level2(x1)
        x3 = self.level3(x2)
        if self.fusion == "mlf":
            fused = self.fuse([x1, x2, x3])
        elif self.fusion == "concat":
            fused = self.fuse(tf.concat([x1, x2, x3], axis=-1))
        else:
            fused = x3
        if self.attention is not None:
            fused = self.refine(fused)
        return x + to_float32(self.decoder(fused))

    def call(self, hazy: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        return _dehaze(hazy, self._forward)

    @classmethod
    def from_config(cls, config: dict) -> MINet:
        # .keras files written before the split carry config="paper" (the same network and weights).
        if config.get("config", "paper") != "paper":
            raise ValueError(f"MINet is the paper's network; config={config['config']!r} is MINetOfficial")
        return cls(**{key: value for key, value in config.items() if key != "config"})

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "steps": self.steps,
                "dilations": list(self.dilations), "eta": self.eta, "block": self.block,
                "attention": self.attention, "fusion": self.fusion, "reduction": self.reduction,
                "recompute": self.recompute}


_PAPER_ONLY = ("config", "filters", "dilations", "block", "attention", "fusion", "reduction")


@keras.saving.register_keras_serializable(package="tfdehaze")
class MINetOfficial(Float32Boundary, keras.Model):
    """MI-Net as the authors released it (the network of their RESIDE-ITS checkpoint; "Implicit Euler ODE networks
    for single-image dehazing", Shen et al., CVPRW 2020). Registered as the preset ``minet-official``.

    Width 64, bias-free convolutions with affine instance norm. Encoder: conv1-norm1-ReLU, conv2-norm2-ReLU,
    conv3 (stride 2, PyTorch's symmetric 1-pixel zero padding)-norm3-ReLU; three residual pre-processing blocks
    (pre_processing_0-2); three levels x <- g_0 + eta f(x), T times (eq. 3; the code: eta = 1, T = 8), f a plain
    MLE block (res1, level 1) or a smoothed dilated one (res2, res4: dilation 2, 4, Fig. 2); a 3x3 fusion gate
    (MLF, eqs. 6-7); decoder deconv3-norm4-ReLU, deconv2-norm5-ReLU, deconv1 (1x1 -> 3); head
    y = LeakyReLU_0.1(conv_su1(h) + conv_su2(hazy)), the RCA-block of eqs. 8-9 with the code's per-channel scalar
    MLP (layer1: y + y o psi), and the 1x1 ``deconv``. It works on BGR 0-255 inside.

    Every sub-layer is an attribute named after the checkpoint module it holds (``conv1``, ``norm1``, ...,
    ``pre_processing_0``, ``level1.f`` = ``res1``, ``gate``, ``layer1``, ``deconv``): `tfdehaze.convert` targets
    them by name.

    Args:
        steps: T, iterations per level (the released code: 8).
        eta: the step of eq. 3 (the released code: 1.0).
        recompute: levels backpropagate by recomputation (see `tfdehaze.layers.implicit.IMBlock`).

    Shapes: ``model(hazy)``, hazy (N, H, W, 3) RGB in [0, 1], any H, W -> {"dehazed": (N, H, W, 3)}, [0, 1] scale,
    unclipped. 628,078 weights in 73 variables.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.models.minet import MINetOfficial
        >>> model = MINetOfficial(steps=1)
        >>> model(tf.zeros([1, 16, 16, 3]))["dehazed"].shape
        TensorShape([1, 16, 16, 3])
        >>> model.count_params(), model.level3.f.dilation
        (628078, 4)
    """

    #: Instance norm uses per-image statistics: tiled inference (`tfdehaze.inference.dehaze_tiled`) approximates it.
    global_statistics = ("instance_norm",)
    tile_multiple = _STRIDE

    def __init__(self, steps: int = 8, eta: float = 1.0, recompute: bool = False, **kwargs):
        paper_only = sorted(key for key in kwargs if key in _PAPER_ONLY)
        if paper_only:
            raise ValueError(f"MINetOfficial is the released (official) network: only steps, eta and recompute are "
                             f"options, not {paper_only} (those belong to MINet, the paper's network)")
        super().__init__(**kwargs)
        self.steps, self.eta, self.recompute = int(steps), float(eta), bool(recompute)
        c = 64
        self.conv1 = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name="conv1")
        self.norm1 = InstanceNormalization(name="norm1")
        self.conv2 = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name="conv2")
        self.norm2 = InstanceNormalization(name="norm2")
        self.conv3 = keras.layers.Conv2D(c, 3, strides=2, use_bias=False, name="conv3")  # padded in `_forward`
        self.norm3 = InstanceNormalization(name="norm3")
        self.pre_processing_0 = MLEBlock(c, 1, residual=True, name="pre_processing_0")
        self.pre_processing_1 = MLEBlock(c, 1, residual=True, name="pre_processing_1")
        self.pre_processing_2 = MLEBlock(c, 1, residual=True, name="pre_processing_2")
        self.level1 = IMBlock(MLEBlock(c, 1, name="res1"), self.steps, self.eta, self.recompute, name="level1")
        self.level2 = IMBlock(MLEBlock(c, 2, second_dilation=1, smooth=True, name="res2"), self.steps, self.eta,
                              self.recompute, name="level2")
        self.level3 = IMBlock(MLEBlock(c, 4, second_dilation=1, smooth=True, name="res4"), self.steps, self.eta,
                              self.recompute, name="level3")
        self.gate = MultiLevelFusion(3, use_bias=True, name="gate")
        self.deconv3 = keras.layers.Conv2DTranspose(c, 4, strides=2, padding="same", name="deconv3")
        self.norm4 = InstanceNormalization(name="norm4")
        self.deconv2 = keras.layers.Conv2D(c, 3, padding="same", name="deconv2")
        self.norm5 = InstanceNormalization(name="norm5")
        self.deconv1 = keras.layers.Conv2D(3, 1, name="deconv1")
        self.conv_su1 = keras.layers.Conv2D(3, 1, name="conv_su1")
        self.conv_su2 = keras.layers.Conv2D(3, 1, name="conv_su2")
        self.layer1 = ResidualChannelAttention(mlp="scalar", mlp_activation=None, name="layer1")
        self.deconv = keras.layers.Conv2D(3, 1, name="deconv")

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        bgr = x[..., ::-1] * 255.0
        h = tf.nn.relu(self.norm1(self.conv1(bgr)))
        h = tf.nn.relu(self.norm2(conv2d_same(self.conv2, h)))
        # PyTorch's stride-2 conv pads 1 on both sides; Keras "same" would pad 0 before / 1 after on even sizes.
        h = tf.nn.relu(self.norm3(self.conv3(tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]))))
        h = self.pre_processing_2(self.pre_processing_1(self.pre_processing_0(h)))
        x1 = self.level1(h)
        x2 = self.level2(x1)
        x3 = self.level3(x2)
        h = tf.nn.relu(self.norm4(self.deconv3(self.gate([x1, x2, x3]))))
        h = self.deconv1(tf.nn.relu(self.norm5(conv2d_same(self.deconv2, h))))
        y = self.conv_su1(h) + self.conv_su2(bgr)
        # LeakyReLU(0.1) written as max(y, 0.1 y): in tf.function, TF 2.21's oneDNN remapper fuses
        # Conv2D + BiasAdd + Add + LeakyRelu and then applies slope 0.2 whatever alpha is (wrong output).
        y = tf.maximum(y, 0.1 * y)
        return self.deconv(self.layer1(y))[..., ::-1] / 255.0

    def call(self, hazy: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        return _dehaze(hazy, self._forward)

    def get_config(self) -> dict:
        return {**super().get_config(), "steps": self.steps, "eta": self.eta, "recompute": self.recompute}


registry.register_presets(PRESETS, MINetOfficial)
