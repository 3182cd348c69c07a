"""Read legacy PyTorch checkpoints without PyTorch and without running code from them; convert MI-Net's weights.

`load_torch_legacy(path)` parses the pre-zip ``torch.save`` format: five consecutive streams in one file —
pickles of the magic number, the protocol version and a sys-info dict, the main pickle (tensors refer to their
storages by persistent ids), a pickle of the list of storage keys — then, per key, an int64 element count and the
storage's raw bytes. A restricted unpickler rebuilds only data: the few torch globals a checkpoint needs are mapped
to numpy-building functions here, ``torch.nn`` modules and the authors' own module classes to an inert stand-in
(`TorchModule`) that merely records its pickled state, and any other global raises `UnsafeCheckpointError` naming
it. No torch import, no class from the file, no code from the file.

`convert_official_weights(pth, out)` maps the authors' released MI-Net (``DataParallel(MI_Net)``) onto the named
layers of `tfdehaze.models.minet.MINetOfficial` and writes Keras weights atomically.
"""
from __future__ import annotations

import os
import pathlib
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_DTYPES = {"DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
           "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The checkpoint asks for a global outside the allow-list (it could run code): refused, nothing executed.

    Examples:
        >>> import tempfile
        >>> class Exploit:                         # unpickling it would call os.system
        ...     def __reduce__(self):
        ...         return os.system, ("echo pwned",)
        >>> path = pathlib.Path(tempfile.mkdtemp(), "evil.pth")
        >>> _ = path.write_bytes(pickle.dumps({"model": Exploit()}, protocol=2))
        >>> load_torch_legacy(path)
        Traceback (most recent call last):
        ...
        tfdehaze.convert.UnsafeCheckpointError: .../evil.pth: refusing the global ...system (not a tensor, storage or
        torch.nn module; loading it could run code)
        >>> issubclass(UnsafeCheckpointError, ValueError)
        True
    """


class TorchModule:
    """Inert stand-in for a pickled ``torch.nn.Module``: keeps the pickled ``__dict__`` (``_parameters``,
    ``_buffers``, ``_modules``, plain attributes) and nothing else. Subclassed per pickled class name.

    Examples:
        What `load_torch_legacy` does with a pickled module: a call records its arguments, runs nothing, and the
        pickled state becomes plain attributes.

        >>> module = TorchModule("rm -rf /")
        >>> module.__setstate__({"_parameters": {"bias": np.zeros(2)}, "_modules": {}})
        >>> module, module._args, module._parameters["bias"].shape
        (<inert torch.nn.Module>, ('rm -rf /',), (2,))
    """

    torch_class = "torch.nn.Module"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # a REDUCE on the class: record only
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state for {self.torch_class}: {type(state).__name__}")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<inert {self.torch_class}>"


class _Storage:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel, self.data = np.dtype(dtype), key, int(numel), None


class _Tensor:
    """A tensor whose storage bytes come after the main pickle; `value()` once they are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)
        extent = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if (any(s < 0 for s in self.stride) or any(n < 0 for n in self.size)
                or (min(self.size, default=1) > 0 and extent >= self.storage.numel)):
            raise pickle.UnpicklingError(f"tensor view {self.size}/{self.stride}+{self.offset} outside its storage "
                                         f"of {self.storage.numel} elements")

    def value(self):
        data = self.storage.data
        if data is None:
            raise pickle.UnpicklingError(f"storage {self.storage.key} was never read")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.size, [s * item for s in self.stride])
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


def _no_backend(*args):
    return None


class _StorageType:
    def __init__(self, name):
        self.name = name


_ALLOWED = {("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
            **{("torch", name): _StorageType(name) for name in _DTYPES}}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source, module_packages, storages):
        super().__init__(file)
        self.source, self.module_packages, self.storages, self.stand_ins = source, module_packages, storages, {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        is_module_class = name.isidentifier() and name[:1].isupper() and (
            module.startswith(("torch.nn.modules.", "torch.nn.parallel.")) or module in self.module_packages)
        if is_module_class:
            key = f"{module}.{name}"
            if key not in self.stand_ins:
                self.stand_ins[key] = type(name, (TorchModule,), {"torch_class": key})
            return self.stand_ins[key]
        raise UnsafeCheckpointError(f"{self.source}: refusing the global {module}.{name} (not a tensor, storage or "
                                    f"torch.nn module; loading it could run code)")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"{self.source}: bad persistent id {pid!r}")
        if pid[0] == "module":       # ("module", class, source_file, source): the class came from find_class
            if not (isinstance(pid[1], type) and issubclass(pid[1], TorchModule)):
                raise UnsafeCheckpointError(f"{self.source}: module persistent id with {pid[1]!r}")
            return pid[1]
        if pid[0] == "storage":      # ("storage", type, key, location, numel, view_metadata)
            storage_type, key, _location, numel, view = pid[1:6]
            if not isinstance(storage_type, _StorageType):
                raise pickle.UnpicklingError(f"{self.source}: storage of unknown type {storage_type!r}")
            if view is not None:
                raise pickle.UnpicklingError(f"{self.source}: storage views are not supported")
            if key not in self.storages:
                self.storages[key] = _Storage(_DTYPES[storage_type.name], key, numel)
            return self.storages[key]
        raise pickle.UnpicklingError(f"{self.source}: unknown persistent id type {pid[0]!r}")


def _materialise(obj, seen=None):
    """Replace every lazy tensor in dicts / lists / tuples / stand-in modules by its numpy array."""
    seen = {} if seen is None else seen
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, _Tensor):
        seen[id(obj)] = result = obj.value()
    elif isinstance(obj, dict):
        seen[id(obj)] = obj
        for k in list(obj):
            obj[k] = _materialise(obj[k], seen)
        result = obj
    elif isinstance(obj, TorchModule):
        seen[id(obj)] = obj
        _materialise(obj.__dict__, seen)
        result = obj
    elif isinstance(obj, list):
        seen[id(obj)] = obj
        obj[:] = [_materialise(v, seen) for v in obj]
        result = obj
    elif isinstance(obj, tuple):
        result = tuple(_materialise(v, seen) for v in obj)
    else:
        result = obj
    return result


def load_torch_legacy(path: str | os.PathLike, module_packages: Sequence[str] = ("MINet",)) -> Any:
    """The object saved by a legacy (pre-zip) ``torch.save``, with tensors as numpy arrays.

    Args:
        path: the ``.pth`` file.
        module_packages: Python modules whose classes are the checkpoint's own ``nn.Module`` subclasses
            (the MI-Net authors': "MINet"); they and ``torch.nn`` modules become inert `TorchModule` stand-ins.

    Raises:
        UnsafeCheckpointError: the file names any other global (nothing of it has run).
        ValueError: not a legacy PyTorch checkpoint, or truncated.

    Examples:
        A checkpoint written by hand in the legacy layout: ``{"weight": <2 x 2 float32 tensor>}``.

        >>> import tempfile
        >>> tensor = (b"ctorch._utils\\n_rebuild_tensor_v2\\n("            # _rebuild_tensor_v2(
        ...           b"(Vstorage\\nctorch\\nFloatStorage\\nV0\\nVcpu\\nI4\\nNtQ"  #   storage "0": 4 float32,
        ...           b"I0\\n(I2\\nI2\\nt(I2\\nI1\\ntI00\\nNtR")                #   offset 0, size 2x2, stride 2, 1)
        >>> path = pathlib.Path(tempfile.mkdtemp(), "tiny.pth")
        >>> with open(path, "wb") as f:
        ...     for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
        ...         pickle.dump(header, f, protocol=2)
        ...     _ = f.write(b"(dVweight\\n" + tensor + b"s.")            # the main pickle
        ...     pickle.dump(["0"], f, protocol=2)                         # storage keys, then their data
        ...     _ = f.write(np.int64(4).tobytes() + np.arange(4, dtype="<f4").tobytes())
        >>> load_torch_legacy(path)
        {'weight': array([[0., 1.],
                          [2., 3.]], dtype=float32)}
        >>> _ = path.write_bytes(b"PK\\x03\\x04")
        >>> load_torch_legacy(path)
        Traceback (most recent call last):
        ...
        ValueError: .../tiny.pth: a zip-format PyTorch checkpoint; only the legacy (pre-1.6) format is read here
    """
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith(b"PK"):
            raise ValueError(f"{path}: a zip-format PyTorch checkpoint; only the legacy (pre-1.6) format is read here")
        f.seek(0)
        storages = {}

        def unpickle():
            try:
                return _RestrictedUnpickler(f, path, tuple(module_packages), storages).load()
            except UnsafeCheckpointError:
                raise
            except Exception as e:  # malformed pickle data of any kind: name the file, not pickle's internals
                raise ValueError(f"{path}: unreadable PyTorch checkpoint ({type(e).__name__}: {e})") from e

        if unpickle() != LEGACY_MAGIC or unpickle() != LEGACY_PROTOCOL:
            raise ValueError(f"{path}: not a legacy PyTorch checkpoint (magic number / protocol mismatch)")
        sys_info = unpickle()
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: only little-endian checkpoints are supported")
        obj = unpickle()
        keys = unpickle()
        if not isinstance(keys, list):
            raise ValueError(f"{path}: no storage key list after the main pickle")
        for key in keys:
            storage = storages.get(key)
            if storage is None:
                raise ValueError(f"{path}: storage {key} is listed but no tensor uses it")
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"{path}: truncated before storage {key}")
            if int(np.frombuffer(head, "<i8")[0]) != storage.numel:
                raise ValueError(f"{path}: storage {key}: size does not match its tensors")
            raw = f.read(storage.numel * storage.dtype.itemsize)
            if len(raw) != storage.numel * storage.dtype.itemsize:
                raise ValueError(f"{path}: truncated in storage {key}")
            storage.data = np.frombuffer(raw, storage.dtype.newbyteorder("<")).astype(storage.dtype)
    missing = [k for k, s in storages.items() if s.data is None]
    if missing:
        raise ValueError(f"{path}: storages {missing} have no data")
    return _materialise(obj)


def _module_state(module: TorchModule, prefix: str = "") -> dict[str, Any]:
    """``state_dict()`` of a stand-in module tree: {"a.b.weight": ndarray}, parameters and non-None buffers."""
    if not isinstance(module, TorchModule):
        raise ValueError(f"not a pickled torch.nn.Module: {type(module).__name__}")
    state = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (module.__dict__.get(group) or {}).items():
            if value is not None:
                state[prefix + name] = value
    for name, child in (module.__dict__.get("_modules") or {}).items():
        if child is not None:
            state.update(_module_state(child, f"{prefix}{name}."))
    return state


def minet_official_state(pth_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The released MI-Net checkpoint's tensors, named as in ``MI_Net.state_dict()`` (DataParallel prefix off).

    The checkpoint holds a dict with a ``"model"`` (or ``"state_dict"``) entry, or the model itself: a state dict
    or a pickled module tree (`TorchModule` stand-ins, whose parameters and buffers are collected).

    Examples:
        >>> import tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp(), "minet.pth")
        >>> with open(path, "wb") as f:                       # legacy layout, a state dict of plain lists
        ...     for part in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True},
        ...                  {"model": {"module.conv1.bias": [0.5, -0.5]}}, []):
        ...         pickle.dump(part, f, protocol=2)
        >>> minet_official_state(path)
        {'conv1.bias': array([ 0.5, -0.5])}
    """
    obj = load_torch_legacy(pth_path)
    model = obj.get("model", obj.get("state_dict")) if isinstance(obj, dict) else obj
    if isinstance(model, dict):
        state = dict(model)
    else:
        state = _module_state(model)
    return {k.removeprefix("module."): np.asarray(v) for k, v in state.items()}


# ---- PyTorch -> Keras mapping for MINetOfficial ------------------------------------------------------------

def _conv(kernel):          # Conv2d weight (O, I, kH, kW) -> Keras Conv2D kernel (kH, kW, I, O)
    return kernel.transpose(2, 3, 1, 0)


def _deconv(kernel):        # ConvTranspose2d weight (I, O, kH, kW) -> Keras Conv2DTranspose kernel (kH, kW, O, I)
    return kernel.transpose(2, 3, 1, 0)


def _same(x):
    return x


def _linear(weight):        # Linear weight (out, in) -> Dense kernel (in, out)
    return weight.T


def _share_sep(weight):     # ShareSepConv weight (1, 1, k, k) -> SharedSeparableConv2D kernel (k, k)
    return weight[0, 0]


def minet_official_targets(model: keras.Model) -> dict[str, tuple[keras.Variable,
                                                                  Callable[[np.ndarray], np.ndarray]]]:
    """{torch state name: (keras variable, transform)} for a `tfdehaze.models.minet.MINetOfficial` (built here on a
    32x32 dummy if it is not yet); each checkpoint module maps to the model's layer of the same name.

    Raises:
        ValueError: ``model`` is not a MINetOfficial (e.g. the paper's `MINet`).

    Examples:
        >>> from tfdehaze.models.minet import MINet, MINetOfficial
        >>> model = MINetOfficial()
        >>> targets = minet_official_targets(model)       # builds the model
        >>> len(targets) == len(model.weights)
        True
        >>> variable, transform = targets["conv1.weight"]   # PyTorch (out, in, kH, kW) -> Keras (kH, kW, in, out)
        >>> tuple(variable.shape), transform(np.zeros((64, 3, 3, 3))).shape
        ((3, 3, 3, 64), (3, 3, 3, 64))
        >>> minet_official_targets(MINet(filters=8, steps=1))
        Traceback (most recent call last):
        ...
        ValueError: the released MI-Net weights fit only MINetOfficial (the authors' released network), not MINet
    """
    from tfdehaze.models.minet import MINetOfficial

    if not isinstance(model, MINetOfficial):
        raise ValueError(f"the released MI-Net weights fit only MINetOfficial (the authors' released network), "
                         f"not {type(model).__name__}")
    if not model.built:
        model(np.zeros((1, 32, 32, 3), np.float32))
    targets = {}

    def conv(name, layer, transform=_conv):
        targets[f"{name}.weight"] = (layer.kernel, transform)
        if layer.use_bias:
            targets[f"{name}.bias"] = (layer.bias, _same)

    def norm(name, layer):
        targets[f"{name}.weight"] = (layer.gamma, _same)
        targets[f"{name}.bias"] = (layer.beta, _same)

    def block(name, mle):
        for i in (1, 2):
            conv(f"{name}.conv{i}", getattr(mle, f"conv{i}"))
            norm(f"{name}.norm{i}", getattr(mle, f"norm{i}"))
            if mle.smooth:
                targets[f"{name}.pre_conv{i}.weight"] = (getattr(mle, f"pre_conv{i}").kernel, _share_sep)

    conv("conv1", model.conv1)
    conv("conv2", model.conv2)
    conv("conv3", model.conv3)
    for i in (1, 2, 3, 4, 5):
        norm(f"norm{i}", getattr(model, f"norm{i}"))
    for i in (0, 1, 2):
        block(f"pre_processing.{i}", getattr(model, f"pre_processing_{i}"))
    block("res1", model.level1.f)
    block("res2", model.level2.f)
    block("res4", model.level3.f)
    conv("gate", model.gate.conv)
    conv("deconv3", model.deconv3, _deconv)
    for name in ("deconv2", "deconv1", "conv_su1", "conv_su2", "deconv"):
        conv(name, getattr(model, name))
    conv("layer1.0", model.layer1.conv)
    for torch_name, dense in (("layer1.2", model.layer1.dense1), ("layer1.3", model.layer1.dense2)):
        targets[f"{torch_name}.weight"] = (dense.kernel, _linear)
        targets[f"{torch_name}.bias"] = (dense.bias, _same)
    return targets


def load_minet_official_state(model: keras.Model, state: Mapping[str, np.ndarray]) -> keras.Model:
    """Assign a released-checkpoint state (``minet_official_state``) to a `MINetOfficial` (built if need be).

    Every checkpoint tensor must be used exactly once and every model weight set exactly once, with equal shapes;
    otherwise ValueError naming the tensors. Returns ``model``.

    Examples:
        >>> from tfdehaze.models.minet import MINet
        >>> load_minet_official_state(MINet(filters=8, steps=1), {"conv1.weight": np.zeros((64, 3, 3, 3))})
        Traceback (most recent call last):
        ...
        ValueError: the released MI-Net weights fit only MINetOfficial (the authors' released network), not MINet
    """
    targets = minet_official_targets(model)
    unused, missing = sorted(set(state) - set(targets)), sorted(set(targets) - set(state))
    if unused or missing:
        raise ValueError(f"MI-Net checkpoint does not match the official model: unused {unused}, missing {missing}")
    variables = [var for var, _ in targets.values()]
    if len({id(v) for v in variables}) != len(variables) or len(variables) != len(model.weights):
        raise ValueError(f"the mapping covers {len({id(v) for v in variables})} of {len(model.weights)} weights")
    for name, (var, transform) in targets.items():
        value = transform(state[name])
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{name}: checkpoint shape {state[name].shape} -> {value.shape}, "
                             f"Keras {var.path} wants {tuple(var.shape)}")
        var.assign(value.astype(np.float32))
    return model


def convert_official_weights(pth_path: str | os.PathLike,
                             out_path: str | os.PathLike | None = None) -> pathlib.Path:
    """Convert the authors' released MI-Net weights to ``minet_official_its.weights.h5`` (atomic write).

    Args:
        pth_path: ``minet_official_its.pth`` (legacy PyTorch pickle of DataParallel(MI_Net)).
        out_path: default ``registry.weights_path("minet-official")``, i.e.
            ``tfdehaze.paths.weights_dir() / "minet_official_its.weights.h5"``, where ``registry.load`` looks.

    Returns: the written path.

    Examples:
        Both arguments are checked before anything is read or built:

        >>> import tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> convert_official_weights(folder / "minet_official_its.pth")
        Traceback (most recent call last):
        ...
        ValueError: checkpoint not found: .../minet_official_its.pth
        >>> _ = (folder / "minet_official_its.pth").write_bytes(b"")
        >>> convert_official_weights(folder / "minet_official_its.pth", folder / "minet.h5")
        Traceback (most recent call last):
        ...
        ValueError: output must end with .weights.h5 (Keras weights), got .../minet.h5
    """
    from tfdehaze import paths
    from tfdehaze.models import registry
    from tfdehaze.models.minet import MINetOfficial

    pth_path = pathlib.Path(pth_path)
    if not pth_path.is_file():
        raise ValueError(f"checkpoint not found: {pth_path}")
    out_path = pathlib.Path(out_path) if out_path is not None else registry.weights_path("minet-official")
    if not out_path.name.endswith(".weights.h5"):
        raise ValueError(f"output must end with .weights.h5 (Keras weights), got {out_path}")
    model = load_minet_official_state(MINetOfficial(), minet_official_state(pth_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return paths.atomic_save(out_path, model.save_weights)
