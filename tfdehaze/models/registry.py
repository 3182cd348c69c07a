"""Model names -> builders: ``build("guided-pix2pix", depth=6)``, ``load("minet-official")``, ``load("m.keras")``.

An entry is a builder (a callable returning a `keras.Model`, called with the user's keyword overrides), a one-line
description and, for names with released weights, a ``weights`` hook: ``weights(model) -> model | None`` receives
the freshly built model, loads the weights into it (building it as it needs) and may return a replacement.
Training hyper-parameters live in `tfdehaze.train.recipes`, not here.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import warnings
from typing import Callable, Optional

import keras

from tfdehaze.models.guided_pix2pix import GuidedPix2Pix


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., keras.Model]
    description: str = ""
    weights: Optional[Callable[[keras.Model], Optional[keras.Model]]] = None


_ENTRIES: dict[str, Entry] = {}


def register(name: str, builder: Callable[..., keras.Model], description: str = "",
             weights: Optional[Callable[[keras.Model], Optional[keras.Model]]] = None, replace: bool = False) -> None:
    """Register ``builder`` under ``name``; a name already taken raises ValueError unless ``replace``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise ValueError(f"the builder of {name!r} must be callable, got {builder!r}")
    if name in _ENTRIES and not replace:
        raise ValueError(f"model name {name!r} is already registered (pass replace=True to override it)")
    _ENTRIES[name] = Entry(name, builder, description, weights)


def names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_ENTRIES)


def describe() -> dict[str, str]:
    """name -> one-line description."""
    return {name: _ENTRIES[name].description for name in names()}


def _entry(name: str) -> Entry:
    if name not in _ENTRIES:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(names())}")
    return _ENTRIES[name]


def build(name: str, **overrides) -> keras.Model:
    """A new model (random weights) from the registered builder, with keyword ``overrides`` of its defaults."""
    entry = _entry(name)
    try:
        return entry.builder(**overrides)
    except (TypeError, ValueError) as err:  # an unknown keyword or a bad value
        raise ValueError(f"model {name!r} with overrides {overrides}: {err}") from err


def load(name_or_path: str | pathlib.Path, **overrides) -> keras.Model:
    """A ready model: a ``.keras`` file via `keras.saving.load_model`, or a registered name built with
    ``overrides`` and, if the entry has released weights, loaded with them (otherwise its weights are random and a
    UserWarning says so).
    """
    if isinstance(name_or_path, pathlib.Path) or str(name_or_path).endswith(".keras"):
        path = pathlib.Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"model file not found: {path}")
        if overrides:
            raise ValueError(f"overrides {sorted(overrides)} apply to registered names, not to the file {path}")
        return keras.saving.load_model(path)
    entry = _entry(str(name_or_path))
    model = build(entry.name, **overrides)
    if entry.weights is None:
        warnings.warn(f"model {entry.name!r} has no released weights: its weights are random (train it, or load a "
                      f".keras file)", stacklevel=2)
    else:
        model = entry.weights(model) or model
    return model


# Built-in entries. Other model files add theirs below.
register("guided-pix2pix", GuidedPix2Pix,
         "Guided-Pix2Pix, paper configuration: 512x512 Pix2Pix U-Net (depth 9) -> 1-channel t, guided filter r=60")
register("guided-pix2pix-rice", functools.partial(GuidedPix2Pix, out_channels=3),
         "Guided-Pix2Pix with a 3-channel transmission, as the authors trained on RICE")

from tfdehaze.models import minet  # noqa: E402

register("minet", minet.MINet,
         "MI-Net, paper configuration: three IM-blocks (T=12, MLE dilations 1, 2, 5), multi-level fusion, RCA")
register("minet-official", functools.partial(minet.MINet, "official"),
         "MI-Net as released (RESIDE ITS weights, ~37 dB SOTS indoor); convert them once with data_prep/convert_minet.py",
         weights=minet.load_official_weights)
