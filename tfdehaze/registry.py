"""One small registry class, and the three registries of the package: models, losses and training-step kinds.

Each module registers its own names where they are defined, with a decorator (as BasicSR's ``ARCH_REGISTRY``)::

    @MODELS.register("minet", description="MI-Net, paper configuration")
    class MINet(keras.Model): ...

A registered name maps to an `Entry`: the object (a class or a function), a one-line description, keyword
``defaults`` the builder is called with (so one class can serve several names, e.g. ``guided-pix2pix-rice`` is
`GuidedPix2Pix` with ``out_channels=3``), and, for names with released weights, a ``preset`` (a dict with
``weights`` file name, ``source`` and ``score``; see `tfdehaze.models.presets`).

This module imports nothing of the package: every other module may register here.

Examples:
    >>> from tfdehaze.registry import Registry
    >>> toys = Registry("toy")
    >>> @toys.register("double", description="x -> 2x")
    ... def double(x, factor=2):
    ...     return factor * x
    >>> toys.build("double", 3)
    6
    >>> toys.register("triple", double, description="x -> 3x", factor=3)
    <function double at ...>
    >>> toys.names(), toys.build("triple", 3)
    (['double', 'triple'], 9)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered name: ``obj(**{**defaults, **overrides})`` builds it.

    Examples:
        >>> from tfdehaze.registry import Entry
        >>> entry = Entry("round-1", round, "round to one decimal", defaults={"ndigits": 1})
        >>> entry.build(3.14159), entry.build(3.14159, ndigits=3)
        (3.1, 3.142)
    """

    name: str
    obj: Callable[..., Any]
    description: str = ""
    defaults: dict = dataclasses.field(default_factory=dict)
    preset: dict | None = None

    def build(self, *args: Any, **overrides: Any) -> Any:
        """Call the registered object with the entry's defaults updated by ``overrides``."""
        return self.obj(*args, **{**self.defaults, **overrides})


def _reimported(a: Callable, b: Callable) -> bool:
    """Two objects of one definition: its module imported twice (doctest collection re-imports modules)."""
    return a is not b and (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", 0), getattr(b, "__qualname__", 0))


class Registry:
    """A name -> `Entry` map filled by a decorator; unknown names raise ValueError listing the known ones.

    Args:
        kind: what is registered ("model", "loss", "step kind"); used in error messages.

    Examples:
        >>> from tfdehaze.registry import Registry
        >>> shapes = Registry("shape")
        >>> @shapes.register("square", description="a side -> its area")
        ... def square(side):
        ...     return side * side
        >>> "square" in shapes, len(shapes), shapes.describe(), shapes.build("square", 3)
        (True, 1, {'square': 'a side -> its area'}, 9)
        >>> shapes.build("circle", 1)
        Traceback (most recent call last):
        ...
        ValueError: unknown shape 'circle'; registered shapes: square
        >>> shapes.register("square", lambda side: 4 * side)
        Traceback (most recent call last):
        ...
        ValueError: shape name 'square' is already registered (pass replace=True to override it)
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, obj: Callable | None = None, *, description: str = "",
                 preset: dict | None = None, replace: bool = False, **defaults: Any) -> Callable:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that registers what it decorates.

        ``defaults`` are keyword arguments the object is built with. A name already taken raises ValueError unless
        ``replace``; only the same definition imported a second time (doctest collection re-imports modules)
        replaces its entry silently. Decorators stack, so one class can be registered under several names.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def add(target: Callable) -> Callable:
            if not callable(target):
                raise ValueError(f"the {self.kind} registered as {name!r} must be callable, got {target!r}")
            if name in self._entries and not replace and not _reimported(self._entries[name].obj, target):
                raise ValueError(f"{self.kind} name {name!r} is already registered (pass replace=True to "
                                 "override it)")
            text = description or (target.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, target, text, dict(defaults), preset)
            return target

        return add if obj is None else add(obj)

    def get(self, name: str) -> Entry:
        """The entry of ``name``; ValueError naming the registered ones if there is none."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {', '.join(self.names())}")
        return self._entries[name]

    def build(self, name: str, *args: Any, **overrides: Any) -> Any:
        """``get(name).build(*args, **overrides)``; a TypeError/ValueError of the builder names the entry."""
        entry = self.get(name)
        try:
            return entry.build(*args, **overrides)
        except (TypeError, ValueError) as err:  # an unknown keyword or a bad value
            raise ValueError(f"{self.kind} {name!r} with options {overrides}: {err}") from err

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and interactive experiments)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """name -> one-line description."""
        return {name: self._entries[name].description for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


MODELS = Registry("model")
LOSSES = Registry("loss")
STEPS = Registry("step kind")
