"""Mixed precision: which Keras dtype policy a run uses, and the float32 boundary every model keeps.

A policy (``keras.mixed_precision``) decides the dtype layers compute in; variables stay float32 in every policy.

- ``"float32"``: everything in float32 (exact reproduction of the papers' numbers).
- ``"mixed_bfloat16"``: convolutions in bfloat16 (CPUs with AMX / AVX512-BF16 units, GPUs of compute capability
  8.0 and newer, TPUs); no loss scaling needed (bfloat16 has float32's exponent range).
- ``"mixed_float16"``: convolutions in float16 (GPUs of compute capability 7.x); the training steps scale the loss
  (``keras.optimizers.LossScaleOptimizer``) so small gradients do not flush to zero.
- ``"auto"``: the best of these the hardware has (`default_policy`), or the ``TFDEHAZE_PRECISION`` environment
  variable when it is set.

What stays float32 in every policy (`Float32Boundary`): a model's inputs and outputs (images in [0, 1], features),
the guided filter's window sums, the physics (airlight, transmission clamp, scattering inversion) and the losses.
Only the layers inside a model compute in the reduced precision.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator
from typing import Any

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
ENV = "TFDEHAZE_PRECISION"
# This module imports TensorFlow and Keras only inside functions: the command-line parsers read `POLICIES`.


def _cpu_flags() -> set[str]:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def default_policy() -> str:
    """The policy the hardware runs fastest without changing results beyond round-off, with the reason.

    A GPU of compute capability >= 8.0: ``mixed_bfloat16``; 7.x: ``mixed_float16``; no GPU and a CPU with bfloat16
    matrix units (``amx_bf16`` or ``avx512_bf16``): ``mixed_bfloat16``; otherwise ``float32``.

    Examples:
        >>> from tfdehaze.precision import POLICIES, default_policy
        >>> policy, reason = default_policy()
        >>> policy in POLICIES and isinstance(reason, str)
        True
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        if tuple(capability) >= (8, 0):
            return "mixed_bfloat16", f"GPU of compute capability {capability[0]}.{capability[1]} (bfloat16 units)"
        if tuple(capability) >= (7, 0):
            return "mixed_float16", f"GPU of compute capability {capability[0]}.{capability[1]} (float16 units)"
        return "float32", "GPU without reduced-precision matrix units"
    flags = _cpu_flags() & {"amx_bf16", "avx512_bf16"}
    if flags:
        return "mixed_bfloat16", f"CPU with bfloat16 units ({', '.join(sorted(flags))})"
    return "float32", "CPU without bfloat16 units"


def resolve(name: str | None = "auto") -> tuple[str, str]:
    """(policy name, why) for ``name`` in ``POLICIES`` or ``"auto"`` / None (`default_policy`, unless the
    ``TFDEHAZE_PRECISION`` environment variable names a policy).

    Examples:
        >>> from tfdehaze.precision import resolve
        >>> resolve("mixed_bfloat16")
        ('mixed_bfloat16', 'asked for')
        >>> resolve("half")
        Traceback (most recent call last):
        ...
        ValueError: unknown precision 'half'; choose one of auto, float32, mixed_bfloat16, mixed_float16
    """
    if name in (None, "auto"):
        env = os.environ.get(ENV)
        if env:
            if env not in POLICIES:
                raise ValueError(f"{ENV}={env!r} is not a precision; choose one of {', '.join(POLICIES)}")
            return env, f"{ENV}={env}"
        return default_policy()
    if name not in POLICIES:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(('auto',) + POLICIES)}")
    return name, "asked for"


@contextlib.contextmanager
def policy(name: str) -> Iterator[str]:
    """Build layers and models under the Keras global dtype policy ``name`` (resolved by `resolve`); the previous
    policy is restored on exit. Layers keep the policy they were created with.

    Examples:
        >>> import keras
        >>> from tfdehaze.precision import policy
        >>> with policy("mixed_bfloat16") as name:
        ...     layer = keras.layers.Conv2D(4, 3)
        >>> name, layer.compute_dtype, layer.variable_dtype, keras.mixed_precision.global_policy().name
        ('mixed_bfloat16', 'bfloat16', 'float32', 'float32')
    """
    import keras

    name = resolve(name)[0]
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy(previous)


def to_float32(value: Any) -> Any:
    """Cast every floating tensor of a nested structure to float32 (others unchanged).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.precision import to_float32
        >>> out = to_float32({"dehazed": tf.ones([1, 2], tf.bfloat16), "steps": tf.constant(3)})
        >>> out["dehazed"].dtype.name, out["steps"].dtype.name
        ('float32', 'int32')
    """
    import keras

    def cast(x):
        dtype = getattr(x, "dtype", None)
        if dtype is not None and keras.backend.is_float_dtype(keras.backend.standardize_dtype(dtype)) \
                and keras.backend.standardize_dtype(dtype) != "float32":
            return keras.ops.cast(x, "float32")
        return x
    return keras.tree.map_structure(cast, value)


class Float32Boundary:
    """Mixin for `keras.Model` / `keras.layers.Layer` subclasses: inputs are taken and outputs returned in float32
    whatever the dtype policy; the layers inside compute in the policy's dtype.

    Put it first among the bases (``class MyNet(Float32Boundary, keras.Model)``). Inside ``call``, a sub-layer's
    output is in the compute dtype: cast it (`to_float32`) before it meets the float32 input (a residual ``+ x``,
    the scattering model).

    Shapes: unchanged; dtypes: floating inputs -> float32, floating outputs -> float32.

    Examples:
        >>> import keras
        >>> from tfdehaze.precision import Float32Boundary, policy
        >>> class Net(Float32Boundary, keras.Model):
        ...     def __init__(self, **kwargs):
        ...         super().__init__(**kwargs)
        ...         self.conv = keras.layers.Conv2D(3, 3, padding="same")
        ...     def call(self, x):
        ...         return {"dehazed": x + to_float32(self.conv(x))}
        >>> from tfdehaze.precision import to_float32
        >>> with policy("mixed_bfloat16"):
        ...     net = Net()
        >>> out = net(keras.random.uniform((1, 8, 8, 3)))
        >>> net.conv.compute_dtype, out["dehazed"].dtype.name
        ('bfloat16', 'float32')
    """

    @property
    def input_dtype(self) -> str:
        return "float32"

    def __call__(self, *args, **kwargs):
        return to_float32(super().__call__(*args, **kwargs))
