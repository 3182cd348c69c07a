"""MI-Net: multi-level implicit network (Shen et al., "Implicit Euler ODE networks for single-image dehazing",
CVPRW 2020), in two configurations behind one class.

``MINet(config="paper")`` (default): encoder (3x3 conv-IN-ReLU, 3x3 stride-2 conv-IN-ReLU), three IM-blocks
(eq. 3, T = 12, f = MLE with dilations 1, 2, 5), MLF (eqs. 6-7), RCA (eqs. 8-9), decoder (4x4 stride-2 transposed
conv-IN-ReLU, 3x3 conv -> 3) added to the hazy input. The ablations of Table 2 are options: ``block`` =
"im" | "resblock-1" | "resblock-T", ``attention`` = "rca" | "ca" | None, ``fusion`` = "mlf" | "concat" | None.

``MINet(config="official")``: the network of the authors' released ITS weights (SPEC "MI-Net"): bias-free convs
with affine IN, encoder conv-IN-ReLU x2 + stride-2, three residual pre-processing blocks, three levels of
x <- f(x) + g0 (T = 8, eta = 1; level 1 a plain block, levels 2 and 3 smoothed dilated blocks, d = 2, 4), a 3x3
MLF, decoder, and the head y = LeakyReLU_0.1(1x1(x) + 1x1(hazy)), y + y o psi, 1x1. It works on BGR 0-255 inside.
Load the released weights with `load_official` after converting them (`data_prep/convert_minet.py`).

Both take hazy RGB (N, H, W, 3) in [0, 1] and return {"dehazed": (N, H, W, 3)} on the [0, 1] scale, unclipped.
Any H, W: the input is reflect-padded to even size and the output cropped back.
"""
import pathlib

import keras
import tensorflow as tf

from tfdehaze import paths
from tfdehaze.layers.attention import ChannelAttention, ResidualChannelAttention
from tfdehaze.layers.fusion import MultiLevelFusion
from tfdehaze.layers.images import check_images, pad_to_multiple
from tfdehaze.layers.implicit import IMBlock, MLEBlock
from tfdehaze.layers.normalization import InstanceNormalization

OFFICIAL_WEIGHTS = "minet_official_its.weights.h5"
CONFIGS = ("paper", "official")
BLOCKS = ("im", "resblock-1", "resblock-T")
ATTENTIONS = ("rca", "ca", None)
FUSIONS = ("mlf", "concat", None)
_STRIDE = 2


def _conv_in_relu(filters, kernel, strides=1, use_bias=False, name=None):
    return keras.Sequential([keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                                                 use_bias=use_bias),
                             InstanceNormalization(), keras.layers.ReLU()], name=name)


@keras.saving.register_keras_serializable(package="tfdehaze")
class MINet(keras.Model):
    """MI-Net dehazer; see the module docstring for the two configurations.

    Args:
        config: "paper" or "official" (the released weights' network; the options below except ``steps``,
            ``eta`` and ``recompute`` must keep their defaults).
        filters: feature width (paper: 64; official: fixed 64).
        steps: T, iterations per IM-block (paper 12, official 8). With block="resblock-T", the number of
            unshared residual blocks.
        dilations: dilation of each level's MLE (paper (1, 2, 5); official fixed (1, 2, 4)).
        eta: IM-block step (1.0: the paper trades a small eta for instance norm).
        block: "im" (IM-blocks), "resblock-1" (one residual block x + eta f(x) per level) or "resblock-T"
            (T unshared residual blocks per level, Table 2).
        attention: "rca", "ca" (ordinary channel attention) or None.
        fusion: "mlf", "concat" (1x1 conv of [x1, x2, x3]) or None (x3 alone, Table 2).
        reduction: RCA / CA MLP reduction ratio.
        recompute: IM-blocks backpropagate by recomputation (training memory nearly flat in T, ~1.3x the
            time; see benchmarks/minet_memory.py).

    Call: ``model(hazy)``, hazy (N, H, W, 3) RGB in [0, 1] -> {"dehazed": (N, H, W, 3)}.
    """

    def __init__(self, config="paper", filters=64, steps=None, dilations=None, eta=1.0, block="im",
                 attention="rca", fusion="mlf", reduction=16, recompute=False, **kwargs):
        super().__init__(**kwargs)
        if config not in CONFIGS:
            raise ValueError(f"config must be one of {CONFIGS}, got {config!r}")
        if block not in BLOCKS or attention not in ATTENTIONS or fusion not in FUSIONS:
            raise ValueError(f"block/attention/fusion must be in {BLOCKS} / {ATTENTIONS} / {FUSIONS}, "
                             f"got {block!r} / {attention!r} / {fusion!r}")
        official = config == "official"
        if official and ((filters, block, attention, fusion) != (64, "im", "rca", "mlf")
                         or dilations not in (None, (1, 2, 4), [1, 2, 4])):
            raise ValueError("config='official' is the released network: only steps, eta and recompute may change")
        self.config_name = config
        self.filters = int(filters)
        self.steps = int(steps if steps is not None else (8 if official else 12))
        self.dilations = tuple(int(d) for d in (dilations or ((1, 2, 4) if official else (1, 2, 5))))
        if len(self.dilations) != 3:
            raise ValueError(f"dilations must be three ints (one per level), got {dilations!r}")
        self.eta = float(eta)
        self.block, self.attention, self.fusion = block, attention, fusion
        self.reduction = int(reduction)
        self.recompute = bool(recompute)
        (self._build_official if official else self._build_paper)()

    # ---- construction -------------------------------------------------------------------------------------
    def _level(self, dilation, name, **mle):
        def f(i=""):
            return MLEBlock(self.filters, dilation, name=f"f{i}", **mle)

        if self.block == "resblock-T":
            return keras.Sequential([IMBlock(f(i), steps=1, eta=self.eta, name=f"res{i}")
                                     for i in range(self.steps)], name=name)
        steps = 1 if self.block == "resblock-1" else self.steps
        return IMBlock(f(), steps=steps, eta=self.eta, recompute=self.recompute, name=name)

    def _build_paper(self):
        self.encoder = keras.Sequential([_conv_in_relu(self.filters, 3, name="conv1"),
                                         _conv_in_relu(self.filters, 3, strides=_STRIDE, name="conv2")],
                                        name="encoder")
        self.level1, self.level2, self.level3 = (self._level(d, f"level{i + 1}")
                                                 for i, d in enumerate(self.dilations))
        if self.fusion == "mlf":
            self.fuse = MultiLevelFusion(name="mlf")
        elif self.fusion == "concat":
            self.fuse = keras.layers.Conv2D(self.filters, 1, name="concat_fusion")
        if self.attention == "rca":
            self.refine = ResidualChannelAttention(self.reduction, name="rca")
        elif self.attention == "ca":
            self.refine = ChannelAttention(self.reduction, name="ca")
        self.decoder = keras.Sequential([
            keras.layers.Conv2DTranspose(self.filters, 4, strides=_STRIDE, padding="same", use_bias=False),
            InstanceNormalization(), keras.layers.ReLU(),
            keras.layers.Conv2D(3, 3, padding="same")], name="decoder")

    def _build_official(self):
        # Attribute names follow the checkpoint's module names (tfdehaze.convert maps them one to one).
        c = self.filters
        self.conv1 = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name="conv1")
        self.norm1 = InstanceNormalization(name="norm1")
        self.conv2 = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name="conv2")
        self.norm2 = InstanceNormalization(name="norm2")
        # PyTorch's stride-2 conv pads 1 on both sides; Keras "same" would pad 0 before / 1 after on even sizes.
        self.conv3 = keras.Sequential([keras.layers.ZeroPadding2D(1),
                                       keras.layers.Conv2D(c, 3, strides=2, use_bias=False)], name="conv3")
        self.norm3 = InstanceNormalization(name="norm3")
        self.pre_processing = keras.Sequential([MLEBlock(c, 1, residual=True, name=f"pre{i}") for i in range(3)],
                                               name="pre_processing")
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

    # ---- forward ------------------------------------------------------------------------------------------
    def _paper(self, x):
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
        return x + self.decoder(fused)

    def _official(self, x):
        bgr = x[..., ::-1] * 255.0
        h = tf.nn.relu(self.norm1(self.conv1(bgr)))
        h = tf.nn.relu(self.norm2(self.conv2(h)))
        h = tf.nn.relu(self.norm3(self.conv3(h)))
        x1 = self.level1(self.pre_processing(h))
        x2 = self.level2(x1)
        x3 = self.level3(x2)
        h = tf.nn.relu(self.norm4(self.deconv3(self.gate([x1, x2, x3]))))
        h = self.deconv1(tf.nn.relu(self.norm5(self.deconv2(h))))
        y = self.conv_su1(h) + self.conv_su2(bgr)
        # LeakyReLU(0.1) written as max(y, 0.1 y): in tf.function, TF 2.21's oneDNN remapper fuses
        # Conv2D + BiasAdd + Add + LeakyRelu and then applies slope 0.2 whatever alpha is (wrong output).
        y = tf.maximum(y, 0.1 * y)
        return self.deconv(self.layer1(y))[..., ::-1] / 255.0

    def call(self, hazy, training=None):
        hazy = tf.cast(check_images(hazy, "hazy", channels=3), self.compute_dtype)
        x, crop = pad_to_multiple(hazy, _STRIDE)
        return {"dehazed": crop(self._official(x) if self.config_name == "official" else self._paper(x))}

    def get_config(self):
        return {**super().get_config(), "config": self.config_name, "filters": self.filters, "steps": self.steps,
                "dilations": list(self.dilations), "eta": self.eta, "block": self.block,
                "attention": self.attention, "fusion": self.fusion, "reduction": self.reduction,
                "recompute": self.recompute}


def build_official(steps=8, recompute=False):
    """The official-configuration MINet, built (weights created) on a dummy 32x32 input."""
    model = MINet("official", steps=steps, recompute=recompute)
    model(tf.zeros([1, 32, 32, 3]))
    return model


def load_official_weights(model, path=None):
    """Load the converted released weights into an official-configuration ``model`` (built here); returns it.

    Args:
        path: the converted ``.weights.h5``; default ``tfdehaze.paths.weights_dir() / OFFICIAL_WEIGHTS``, written
            by ``python data_prep/convert_minet.py /path/to/minet_official_its.pth``.
    """
    if getattr(model, "config_name", None) != "official":
        raise ValueError("the released MI-Net weights fit only MINet(config='official')")
    path = pathlib.Path(path) if path is not None else paths.weights_dir() / OFFICIAL_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"converted MI-Net weights not found at {path}: run "
            f"`python data_prep/convert_minet.py /path/to/minet_official_its.pth` first")
    model(tf.zeros([1, 32, 32, 3]))
    model.load_weights(str(path))
    return model


def load_official(path=None, steps=8, recompute=False):
    """``MINet(config="official")`` with the authors' released ITS weights (see `load_official_weights`)."""
    return load_official_weights(MINet("official", steps=steps, recompute=recompute), path)
