"""Guided-Pix2Pix: a Pix2Pix U-Net estimates the transmission, a differentiable guided filter refines it, and the
scattering model inverts the haze (§III-B and §III-E of Jiao et al., "Guided-Pix2Pix: End-to-End Inference and
Refinement Network for Image Dehazing", IEEE JSTARS 2021).

    t0 = G0(I)                                  (39)   `Pix2PixUNet`, sigmoid output in (0, 1)
    J0 = (I - A) / t0 + A                       (40)   coarse dehazed image
    t  = f_guided(gray(I), t0)                  (41)   `tfdehaze.layers.guided_filter.GuidedFilter`
    J  = (I - A) / t + A                        (42)   `tfdehaze.physics.dehaze` (with a t_min clamp)

A is the airlight of eqs. (5)-(7), estimated per image and held constant in backprop. `PatchDiscriminator` is the
conditional PatchGAN of §III-E (hazy image and dehazed/clear image concatenated).

Everything takes images float32 in [0, 1], NHWC, RGB; the networks convert to Pix2Pix's [-1, 1] inside.
The backbone and the discriminator are those of Isola et al., "Image-to-Image Translation with Conditional
Adversarial Networks" (CVPR 2017), as in the authors' code.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfdehaze import physics
from tfdehaze.check import check_image
from tfdehaze.layers.dropout import SyncDropout
from tfdehaze.layers.guided_filter import GuidedFilter
from tfdehaze.layers.images import pad_to_multiple
from tfdehaze.layers.normalization import InstanceNormalization
from tfdehaze.precision import Float32Boundary, to_float32
from tfdehaze.registry import MODELS

_DROPOUT_BLOCKS = 3  # Pix2Pix: dropout on the first (deepest) three decoder blocks


def _kernel_init():
    # Pix2Pix / the authors' code: N(0, 0.02) for every convolution (one initializer object per layer).
    return keras.initializers.RandomNormal(0.0, 0.02)


def _instance_norm():
    # The authors' instance norm: affine, scale initialised N(1, 0.02), offset 0, epsilon 1e-5.
    return InstanceNormalization(gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02))


@keras.saving.register_keras_serializable(package="tfdehaze")
class Pix2PixUNet(keras.Model):
    """G0: the Pix2Pix U-Net of the authors' code, mapping a hazy image to a transmission map t0 in (0, 1) (eq. 39).

    Encoder: ``depth`` blocks Conv2D(4x4, stride 2, no bias) - InstanceNorm - LeakyReLU(leaky_slope); no norm on the
    first block. Level i (0-based) has min(base_filters * 2**i, max_filters) channels, so the default (depth 9,
    512x512 input) is 64, 128, 256, 512 x 6, as in the authors' code. A smaller ``depth`` keeps the first levels of
    the same scheme (e.g. depth 5, base 8: 8, 16, 32, 64, 128).
    Decoder: ``depth - 1`` blocks Conv2DTranspose(4x4, stride 2, no bias) - InstanceNorm - Dropout(dropout, the first
    three blocks only) - ReLU, each followed by concatenation with the encoder output of the same resolution (widths
    mirror the encoder: 512 x 5, 256, 128, 64 by default); then Conv2DTranspose(4x4, stride 2, bias) to
    ``out_channels`` with a sigmoid.

    Input in [0, 1] is mapped to Pix2Pix's [-1, 1] inside. Any H, W: the input is reflect-padded to a multiple of
    2**depth and the output cropped back.

    Note on the bottleneck: with a 512x512 input and depth 9 the innermost block is 1x1, where instance norm outputs
    only its offset (x - mean = 0), so the innermost conv receives no gradient. That is what the authors' code does
    (``innermost_norm=True``, the default); ``innermost_norm=False`` drops that norm, as PyTorch's pix2pix does.

    Args:
        out_channels: channels of t0 (1: the paper; 3: RICE, as the authors trained).
        depth: number of stride-2 downsamplings (9 for 512x512).
        base_filters, max_filters: width of the first level and the cap.
        leaky_slope: LeakyReLU slope of the encoder (0.3, Keras' default, is what the authors ran; pix2pix: 0.2).
        dropout: rate of the first three decoder blocks.
        innermost_norm: instance norm on the innermost encoder block (see above).

    Shapes: (N, H, W, 3) in [0, 1] -> (N, H, W, out_channels) in (0, 1).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.models.guided_pix2pix import Pix2PixUNet
        >>> unet = Pix2PixUNet(depth=4, base_filters=8)
        >>> unet.widths
        [8, 16, 32, 64]
        >>> t0 = unet(tf.random.uniform([1, 20, 24, 3]))  # padded to 32 x 32 inside, cropped back
        >>> t0.shape, bool(tf.reduce_min(t0) > 0.0 and tf.reduce_max(t0) < 1.0)
        (TensorShape([1, 20, 24, 1]), True)
    """

    def __init__(self, out_channels: int = 1, depth: int = 9, base_filters: int = 64, max_filters: int = 512,
                 leaky_slope: float = 0.3, dropout: float = 0.5, innermost_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        for key, value in (("out_channels", out_channels), ("depth", depth), ("base_filters", base_filters),
                           ("max_filters", max_filters)):
            if int(value) != value or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.out_channels, self.depth = int(out_channels), int(depth)
        self.base_filters, self.max_filters = int(base_filters), int(max_filters)
        self.leaky_slope, self.dropout, self.innermost_norm = float(leaky_slope), float(dropout), bool(innermost_norm)
        self.widths = [min(self.base_filters * 2 ** i, self.max_filters) for i in range(self.depth)]

        for i, width in enumerate(self.widths, start=1):
            block = [keras.layers.Conv2D(width, 4, strides=2, padding="same", use_bias=False,
                                         kernel_initializer=_kernel_init())]
            if i > 1 and (i < self.depth or self.innermost_norm):
                block.append(_instance_norm())
            block.append(keras.layers.LeakyReLU(negative_slope=self.leaky_slope))
            setattr(self, f"down{i}", keras.Sequential(block, name=f"down{i}"))
        for j in range(1, self.depth):
            block = [keras.layers.Conv2DTranspose(self.widths[-1 - j], 4, strides=2, padding="same", use_bias=False,
                                                  kernel_initializer=_kernel_init()),
                     _instance_norm()]
            if j <= _DROPOUT_BLOCKS and self.dropout > 0:
                block.append(SyncDropout(self.dropout))  # masks independent of the replica count
            block.append(keras.layers.ReLU())
            setattr(self, f"up{j}", keras.Sequential(block, name=f"up{j}"))
        self.last = keras.layers.Conv2DTranspose(self.out_channels, 4, strides=2, padding="same",
                                                 activation="sigmoid", kernel_initializer=_kernel_init(), name="last")

    def build(self, input_shape):
        shape = (None, None, None, input_shape[-1])
        for i, width in enumerate(self.widths, start=1):
            getattr(self, f"down{i}").build(shape)
            shape = (None, None, None, width)
        for j in range(1, self.depth):
            getattr(self, f"up{j}").build(shape)
            shape = (None, None, None, 2 * self.widths[-1 - j])
        self.last.build(shape)

    def call(self, hazy: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        hazy = check_image(hazy, "hazy")
        x, crop = pad_to_multiple(hazy * 2.0 - 1.0, 2 ** self.depth)
        skips = []
        for i in range(1, self.depth + 1):
            x = getattr(self, f"down{i}")(x, training=training)
            skips.append(x)
        for j in range(1, self.depth):
            x = getattr(self, f"up{j}")(x, training=training)
            x = tf.concat([x, skips[-1 - j]], axis=-1)
        return crop(self.last(x))

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, depth=self.depth, base_filters=self.base_filters,
                      max_filters=self.max_filters, leaky_slope=self.leaky_slope, dropout=self.dropout,
                      innermost_norm=self.innermost_norm)
        return config


@MODELS.register("guided-pix2pix", description="Guided-Pix2Pix, paper configuration: 512x512 Pix2Pix U-Net "
                 "(depth 9) -> 1-channel t, guided filter r=60")
@MODELS.register("guided-pix2pix-rice", out_channels=3,
                 description="Guided-Pix2Pix with a 3-channel transmission, as the authors trained on RICE")
@keras.saving.register_keras_serializable(package="tfdehaze")
class GuidedPix2Pix(Float32Boundary, keras.Model):
    """G: Pix2Pix backbone - guided filter layer - dehazing equation (eqs. 39-42).

    Forward, for hazy I (N, H, W, 3) in [0, 1]:
      t0 = G0(I)                                  (N, H, W, C), sigmoid, in (0, 1)
      A  = physics.atmospheric_light(I, airlight_method)   per image, (N, 1, 1, 3), constant in backprop
      t  = clip(GuidedFilter(radius, eps)(gray(I), t0), t_min, 1)
      J  = physics.dehaze(I, t, A, t_min),  J0 = physics.dehaze(I, t0, A, t_min)   (unclipped)

    The guided filter is a local linear fit and overshoots the range of t0 near strong edges, so the refined t is
    clipped to [t_min, 1]: t > 1 would brighten the haze instead of removing it, and t below t_min is what
    `physics.dehaze` clamps anyway. Clipping (rather than a soft squash) keeps t unchanged wherever it is already in
    range; the gradient is zero only at clipped pixels. The returned ``transmission`` is that clipped t, so
    ``physics.dehaze(hazy, transmission, airlight, t_min)`` reproduces ``dehazed`` exactly.

    ``eps`` refers to a guide in [0, 1] (the grayscale of I). The authors' 1e-4 was for a [-1, 1] guide, i.e. about
    2.5e-5 on ours; 1e-4 is kept as the default, the paper's 1e-8 also works.

    Args:
        out_channels: C, channels of t (1 paper default, 3 RICE).
        depth, base_filters, max_filters, leaky_slope, dropout, innermost_norm: see `Pix2PixUNet`.
        radius, eps: guided filter (60, 1e-4).
        t_min: transmission floor of the inversion (0.05).
        airlight_method: ``"brightest_luma"`` (paper eqs. 5-7), ``"brightest_value"`` (authors' code) or
            ``"dark_channel"``.
        custom_gradient: the guided filter's backward by Algorithm 2 (default) or TensorFlow autodiff of the same
            forward (for comparison, see benchmarks/train_step.py).

    ``model(hazy, airlight=A)`` uses a given A (broadcast to (N, 1, 1, 3)) instead of estimating it from ``hazy``:
    tiled inference (`tfdehaze.inference.dehaze_tiled`) estimates A once on the whole image (`estimate_airlight`)
    and passes it to every tile.

    Shapes: ``model(hazy)``, hazy (N, H, W, 3) in [0, 1], any H, W (the backbone pads and crops) -> a dict:
    ``dehazed`` J (N, H, W, 3), ``transmission`` t (N, H, W, C), ``coarse_dehazed`` J0 (N, H, W, 3),
    ``coarse_transmission`` t0 (N, H, W, C), ``airlight`` A (N, 1, 1, 3). Sub-layers: g0, guided_filter.

    Examples:
        >>> import numpy as np
        >>> import tensorflow as tf
        >>> from tfdehaze import physics
        >>> from tfdehaze.models.guided_pix2pix import GuidedPix2Pix
        >>> model = GuidedPix2Pix(depth=4, base_filters=8, radius=2, eps=1e-2)
        >>> hazy = tf.random.uniform([2, 16, 16, 3])
        >>> out = model(hazy)
        >>> {name: tuple(value.shape) for name, value in sorted(out.items())}  # doctest: +NORMALIZE_WHITESPACE
        {'airlight': (2, 1, 1, 3), 'coarse_dehazed': (2, 16, 16, 3), 'coarse_transmission': (2, 16, 16, 1),
         'dehazed': (2, 16, 16, 3), 'transmission': (2, 16, 16, 1)}
        >>> t = out["transmission"]
        >>> bool(tf.reduce_min(t) >= model.t_min and tf.reduce_max(t) <= 1.0)  # clipped to [t_min, 1]
        True
        >>> bool(np.allclose(physics.dehaze(hazy, t, out["airlight"], model.t_min), out["dehazed"]))  # eq. (42)
        True
        >>> given = model(hazy, airlight=tf.fill([2, 1, 1, 3], 0.7))          # an airlight from elsewhere
        >>> float(tf.reduce_max(tf.abs(given["airlight"] - 0.7))), given["dehazed"].shape
        (0.0, TensorShape([2, 16, 16, 3]))
    """

    def __init__(self, out_channels: int = 1, depth: int = 9, base_filters: int = 64, max_filters: int = 512,
                 leaky_slope: float = 0.3, dropout: float = 0.5, innermost_norm: bool = True, radius: int = 60,
                 eps: float = 1e-4, t_min: float = 0.05, airlight_method: str = "brightest_luma",
                 custom_gradient: bool = True, **kwargs):
        super().__init__(**kwargs)
        if out_channels not in (1, 3):
            raise ValueError(f"out_channels must be 1 or 3 (one transmission per pixel or per colour), "
                             f"got {out_channels!r}")
        if not 0.0 < t_min <= 1.0:
            raise ValueError(f"t_min must be in (0, 1], got {t_min!r}")
        if airlight_method not in physics.AIRLIGHT_METHODS:
            raise ValueError(f"unknown airlight_method {airlight_method!r}; choose one of {physics.AIRLIGHT_METHODS}")
        self.radius, self.eps, self.t_min, self.airlight_method = radius, eps, float(t_min), airlight_method
        self.g0 = Pix2PixUNet(out_channels=out_channels, depth=depth, base_filters=base_filters,
                              max_filters=max_filters, leaky_slope=leaky_slope, dropout=dropout,
                              innermost_norm=innermost_norm, name="g0")
        self.custom_gradient = bool(custom_gradient)
        self.guided_filter = GuidedFilter(radius=radius, eps=eps, custom_gradient=custom_gradient,
                                          name="guided_filter")   # float32 under every policy

    #: What the output depends on beyond a local window (`tfdehaze.inference.dehaze_tiled`): the airlight is global
    #: (estimate it once with `estimate_airlight` and pass it as ``airlight=``); the U-Net's instance norm uses
    #: per-image statistics (tiles see per-tile statistics).
    global_statistics = ("airlight", "instance_norm")

    @property
    def tile_multiple(self) -> int:
        """The U-Net's total stride, 2**depth: tiles are placed on this grid.

        Examples:
            >>> from tfdehaze.models.guided_pix2pix import GuidedPix2Pix
            >>> GuidedPix2Pix(depth=4, base_filters=8).tile_multiple
            16
        """
        return 2 ** self.g0.depth

    def estimate_airlight(self, hazy: tf.Tensor) -> tf.Tensor:
        """A of eqs. (5)-(7) for each image of ``hazy`` (N, H, W, 3) -> (N, 1, 1, 3), as `call` estimates it.

        Examples:
            >>> import numpy as np
            >>> from tfdehaze.models.guided_pix2pix import GuidedPix2Pix
            >>> hazy = np.full((1, 8, 8, 3), 0.2, np.float32)
            >>> hazy[0, 3, 3] = [0.9, 0.8, 0.7]
            >>> GuidedPix2Pix(depth=3, base_filters=4).estimate_airlight(hazy)[0, 0, 0].numpy()
            array([0.9, 0.8, 0.7], dtype=float32)
        """
        return physics.atmospheric_light(check_image(hazy, "hazy", channels=3), self.airlight_method)

    def build(self, input_shape):
        self.g0.build(input_shape)

    def call(self, hazy: tf.Tensor, training: bool | None = None,
             airlight: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        hazy = check_image(hazy, "hazy", channels=3)
        t0 = to_float32(self.g0(hazy, training=training))
        if airlight is None:
            airlight = physics.atmospheric_light(hazy, self.airlight_method)
        else:  # given (e.g. estimated once on the whole image for tiled inference): (N, 1, 1, 3), a constant
            airlight = tf.stop_gradient(tf.broadcast_to(tf.cast(airlight, hazy.dtype), [tf.shape(hazy)[0], 1, 1, 3]))
        t = tf.clip_by_value(self.guided_filter(hazy, t0), self.t_min, 1.0)
        return {
            "dehazed": physics.dehaze(hazy, t, airlight, self.t_min),
            "transmission": t,
            "coarse_dehazed": physics.dehaze(hazy, t0, airlight, self.t_min),
            "coarse_transmission": t0,
            "airlight": airlight,
        }

    def get_config(self):
        config = super().get_config()
        g0 = self.g0.get_config()
        config.update({key: g0[key] for key in ("out_channels", "depth", "base_filters", "max_filters",
                                                "leaky_slope", "dropout", "innermost_norm")})
        config.update(radius=self.radius, eps=self.eps, t_min=self.t_min, airlight_method=self.airlight_method,
                      custom_gradient=self.custom_gradient)
        return config


@keras.saving.register_keras_serializable(package="tfdehaze")
class PatchDiscriminator(Float32Boundary, keras.Model):
    """Conditional PatchGAN D of Pix2Pix / the authors' code (§III-E): one real/fake logit per image patch.

    Layers: ``n_layers`` Conv2D(4x4, stride 2) with min(base_filters * 2**i, max_filters) channels (no norm on the
    first), then ZeroPad(1) - Conv2D(4x4, stride 1, min(base_filters * 2**n_layers, max_filters)), then ZeroPad(1) -
    Conv2D(4x4, stride 1) to 1 channel (logits, with bias). Each hidden conv is followed by instance norm (except the
    first) and LeakyReLU(leaky_slope). Default (64, 128, 256, 512): each logit sees a 70x70 patch
    (`receptive_field`); a 256x256 input gives 30x30 logits, 512x512 gives 62x62.

    Input: the pair (hazy, image) as a tuple/list of two (N, H, W, 3) tensors, or their 6-channel concatenation,
    in [0, 1]; mapped to [-1, 1] inside. Output: logits (N, h, w, 1) for BCE-from-logits.

    Args:
        base_filters, n_layers, max_filters: widths and number of stride-2 convs (64, 3, 512).
        leaky_slope: 0.3, Keras' default, as in the authors' code (pix2pix: 0.2).
        norm: ``"instance"`` (the paper) or ``"none"`` (convs then get biases; useful to inspect the receptive field,
            which instance norm's global statistics blur).

    Shapes: (hazy (N, H, W, 3), image (N, H, W, 3)) or (N, H, W, 6) -> logits (N, H / 2**n_layers - 2,
    W / 2**n_layers - 2, 1). Sub-layers: net.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.models.guided_pix2pix import PatchDiscriminator
        >>> disc = PatchDiscriminator(base_filters=8, n_layers=2)
        >>> hazy, clear = tf.random.uniform([2, 32, 32, 3]), tf.random.uniform([2, 32, 32, 3])
        >>> disc((hazy, clear)).shape  # 32 / 4 - 2 = 6 logits per side
        TensorShape([2, 6, 6, 1])
        >>> disc.receptive_field, PatchDiscriminator().receptive_field
        (34, 70)
    """

    def __init__(self, base_filters: int = 64, n_layers: int = 3, max_filters: int = 512, leaky_slope: float = 0.3,
                 norm: str = "instance", **kwargs):
        super().__init__(**kwargs)
        for key, value in (("base_filters", base_filters), ("n_layers", n_layers), ("max_filters", max_filters)):
            if int(value) != value or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if norm not in ("instance", "none"):
            raise ValueError(f"norm must be 'instance' or 'none', got {norm!r}")
        self.base_filters, self.n_layers, self.max_filters = int(base_filters), int(n_layers), int(max_filters)
        self.leaky_slope, self.norm = float(leaky_slope), norm

        use_bias = norm == "none"
        layers = []
        for i in range(self.n_layers + 1):
            stride = 2 if i < self.n_layers else 1
            if stride == 1:
                layers.append(keras.layers.ZeroPadding2D(1))
            layers.append(keras.layers.Conv2D(min(self.base_filters * 2 ** i, self.max_filters), 4, strides=stride,
                                              padding="same" if stride == 2 else "valid", use_bias=use_bias,
                                              kernel_initializer=_kernel_init()))
            if i > 0 and norm == "instance":
                layers.append(_instance_norm())
            layers.append(keras.layers.LeakyReLU(negative_slope=self.leaky_slope))
        layers += [keras.layers.ZeroPadding2D(1), keras.layers.Conv2D(1, 4, kernel_initializer=_kernel_init())]
        self.net = keras.Sequential(layers, name="net")

    @property
    def receptive_field(self) -> int:
        """Side in input pixels of the square patch one logit depends on (convs only; 70 for the default)."""
        size = 1
        for stride in [1, 1] + [2] * self.n_layers:  # walk back from the logits: r <- (r - 1) * stride + 4
            size = (size - 1) * stride + 4
        return size

    @property
    def min_size(self) -> int:
        """Smallest input side that yields logits: ceil(side / 2**n_layers) must be at least 3 (two 4x4 convs)."""
        return 2 ** (self.n_layers + 1) + 1

    @staticmethod
    def _channels(input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            return sum(s[-1] for s in input_shape)
        return input_shape[-1]

    def build(self, input_shape):
        self.net.build((None, None, None, self._channels(input_shape)))

    def call(self, inputs: tf.Tensor | tuple[tf.Tensor, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"PatchDiscriminator takes (hazy, image), got {len(inputs)} tensors")
            inputs = tf.concat([check_image(inputs[0], "hazy", 3, min_size=self.min_size),
                                check_image(inputs[1], "image", 3, min_size=self.min_size)], -1)
        x = check_image(inputs, "inputs", min_size=self.min_size)
        return self.net(x * 2.0 - 1.0, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(base_filters=self.base_filters, n_layers=self.n_layers, max_filters=self.max_filters,
                      leaky_slope=self.leaky_slope, norm=self.norm)
        return config
