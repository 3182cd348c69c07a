"""Loss terms from recipes (as BasicSR builds losses from ``{type, loss_weight, ...}``).

A recipe lists its loss terms as data::

    [{"type": "l1", "weight": 1.0},
     {"type": "perceptual", "weight": 1.0, "weights_path": "vgg19.h5"},
     {"type": "wfmil", "weight": 1.0, "name": "mimic"}]

``type`` is a name in `tfdehaze.registry.LOSSES`; ``weight`` (default 1) multiplies the term; ``name`` (default the
type) is what the logs call it; ``inputs`` overrides which values of the step the loss takes (a name ending in
``?`` is optional: None when the step or the data does not provide it); every other key is an option of the loss.
A registered loss is a function ``fn(*inputs, **options) -> (N,)`` or a class built once with the options whose
instances are called with the inputs.

The inputs are named values a training step provides (its *context*):

=====================  =====================================================================================
``hazy``, ``clear``    the batch's images, (N, H, W, 3) in [0, 1]
``transmission``       the batch's transmission map when the data has one, (N, H, W, 1), else absent
``dehazed``            the model's restored image (its ``output_key``), (N, H, W, 3)
``outputs``            the model's whole output (a dict for models that return several maps)
``fake_logits``        the discriminator's logits on the restored image (gan step)
``teacher_features``   list of teacher feature maps (distillation step), one per mimicking pair
``student_features``   list of student feature maps, adapted to the teacher's widths, same order
=====================  =====================================================================================

Examples:
    >>> import tensorflow as tf
    >>> from tfdehaze.losses import build_terms, total
    >>> terms = build_terms([{"type": "l1", "weight": 2.0}, {"type": "mse", "weight": 0.5}])
    >>> context = {"clear": tf.zeros([1, 4, 4, 3]), "dehazed": tf.fill([1, 4, 4, 3], 0.5)}
    >>> loss, parts = total(terms, context)
    >>> float(loss[0]), {name: float(value[0]) for name, value in parts.items()}
    (1.125, {'l1': 0.5, 'mse': 0.25})
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tensorflow as tf

from tfdehaze.precision import to_float32
from tfdehaze.registry import LOSSES

DEFAULT_INPUTS = ("clear", "dehazed")


def register_loss(name: str, inputs: tuple[str, ...] = DEFAULT_INPUTS, description: str = "") -> Callable:
    """Decorator: register a loss function or class under ``name``, taking the step's values ``inputs``.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.losses import build_term, register_loss
        >>> from tfdehaze.registry import LOSSES
        >>> @register_loss("max-error", description="largest absolute error per example")
        ... def max_error(clear, dehazed):
        ...     return tf.reduce_max(tf.abs(clear - dehazed), axis=[1, 2, 3])
        >>> max_error.inputs, LOSSES.describe()["max-error"]
        (('clear', 'dehazed'), 'largest absolute error per example')
        >>> term = build_term({"type": "max-error", "weight": 2.0})
        >>> term({"clear": tf.zeros([2, 4, 4, 3]), "dehazed": tf.fill([2, 4, 4, 3], 0.25)}).numpy()
        array([0.25, 0.25], dtype=float32)
        >>> LOSSES.unregister("max-error")
    """

    def add(obj: Callable) -> Callable:
        obj.inputs = tuple(inputs)
        return LOSSES.register(name, obj, description=description)

    return add


@dataclasses.dataclass
class Term:
    """One weighted loss term: ``weight * fn(*(context[k] for k in inputs))``, per example.

    Calling a term gives the unweighted value; `total` applies the weights.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.losses import Term
        >>> term = Term("gap", lambda clear, dehazed: tf.reduce_mean(clear - dehazed, axis=[1, 2, 3]), weight=0.5)
        >>> term({"clear": tf.ones([2, 4, 4, 3]), "dehazed": tf.zeros([2, 4, 4, 3])}).numpy()
        array([1., 1.], dtype=float32)
        >>> term.reads("clear"), term.reads("hazy")
        (True, False)
        >>> term({"clear": tf.ones([2, 4, 4, 3])})
        Traceback (most recent call last):
        ...
        ValueError: loss term 'gap' needs ['dehazed'], which this training step does not provide (it provides
        ['clear'])
    """

    name: str
    fn: Callable[..., tf.Tensor]
    weight: float = 1.0
    inputs: tuple[str, ...] = DEFAULT_INPUTS

    def __call__(self, context: Mapping[str, Any]) -> tf.Tensor:
        """The unweighted per-example value (N,) for a step's ``context``."""
        missing = [key for key in self.inputs if not key.endswith("?") and key not in context]
        if missing:
            raise ValueError(f"loss term {self.name!r} needs {missing}, which this training step does not provide "
                             f"(it provides {sorted(context)})")
        # Losses are computed in float32 whatever the dtype policy (bfloat16 / float16 features, logits).
        return to_float32(self.fn(*(to_float32(context.get(key.rstrip("?"))) for key in self.inputs)))

    def reads(self, key: str) -> bool:
        """Whether the term takes the step's value ``key`` (required or optional)."""
        return key in (name.rstrip("?") for name in self.inputs)


def build_term(spec: Mapping[str, Any]) -> Term:
    """A `Term` from ``{"type": ..., "weight": ..., "name": ..., "inputs": [...], **options}``.

    Examples:
        >>> from tfdehaze.losses import build_term
        >>> term = build_term({"type": "l1", "weight": 100.0, "name": "pixel"})
        >>> term.name, term.weight, term.inputs
        ('pixel', 100.0, ('clear', 'dehazed'))
        >>> build_term({"type": "l1", "weight": "high"})
        Traceback (most recent call last):
        ...
        ValueError: loss term 'l1': weight must be a number, got 'high'
    """
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"a loss term is an object with a 'type' (one of {LOSSES.names()}), got {spec!r}")
    options = dict(spec)
    kind = options.pop("type")
    weight = options.pop("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ValueError(f"loss term {kind!r}: weight must be a number, got {weight!r}")
    name = options.pop("name", kind)
    entry = LOSSES.get(kind)
    inputs = tuple(options.pop("inputs", entry.obj.inputs))
    try:
        fn = entry.obj(**options) if isinstance(entry.obj, type) else functools.partial(entry.obj, **options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"loss term {kind!r} with options {options}: {err}") from err
    return Term(name, fn, float(weight), inputs)


def build_terms(specs: Iterable[Mapping[str, Any]]) -> list[Term]:
    """`Term` objects from a recipe's ``losses`` list; names must be unique.

    Examples:
        >>> from tfdehaze.losses import build_terms
        >>> [(term.name, term.weight) for term in build_terms([{"type": "l1"}, {"type": "gan", "weight": 0.01}])]
        [('l1', 1.0), ('gan', 0.01)]
        >>> build_terms([{"type": "l1"}, {"type": "l1", "weight": 2.0}])
        Traceback (most recent call last):
        ...
        ValueError: loss term names must be unique (give a 'name'), got ['l1', 'l1']
    """
    terms = [build_term(spec) for spec in specs]
    if not terms:
        raise ValueError(f"a recipe needs at least one loss term; registered losses: {', '.join(LOSSES.names())}")
    names = [term.name for term in terms]
    if len(set(names)) != len(names):
        raise ValueError(f"loss term names must be unique (give a 'name'), got {names}")
    return terms


def total(terms: Iterable[Term], context: Mapping[str, Any]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """(sum of weighted terms, {name: unweighted term}), all per example (N,).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.losses import build_terms, total
        >>> terms = build_terms([{"type": "l1", "weight": 10.0}, {"type": "mse"}])
        >>> loss, parts = total(terms, {"clear": tf.zeros([2, 1, 1, 3]), "dehazed": tf.fill([2, 1, 1, 3], 0.5)})
        >>> loss.numpy(), {name: value.numpy() for name, value in sorted(parts.items())}
        (array([5.25, 5.25], dtype=float32), {'l1': array([0.5, 0.5], dtype=float32),
                                              'mse': array([0.25, 0.25], dtype=float32)})
    """
    parts = {term.name: term(context) for term in terms}
    weighted = [term.weight * parts[term.name] for term in terms]
    return tf.add_n(weighted), parts


def weighted_sum(weights: Mapping[str, float]) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """A per-example loss ``(y_true, y_pred) -> sum_k w_k * loss_k(y_true, y_pred)`` from ``{"l1": 1.0, ...}``.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.losses import weighted_sum
        >>> loss = weighted_sum({"l1": 2.0, "mse": 1.0})
        >>> loss(tf.zeros([1, 2, 2, 3]), tf.fill([1, 2, 2, 3], 0.5)).numpy()  # 2 * 0.5 + 0.25
        array([1.25], dtype=float32)
    """
    terms = build_terms([{"type": name, "weight": weight} for name, weight in weights.items()])

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return total(terms, {"clear": y_true, "dehazed": y_pred})[0]

    return loss
