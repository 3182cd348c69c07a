"""The restricted checkpoint reader and the converter of the MI-Net authors' released weights.

Without ../shared/reference these tests build small legacy checkpoints themselves (the malicious-pickle and
format tests); with it they convert the real weights, check PyTorch parity on a real SOTS crop (torch optional)
and the PSNR on real SOTS-indoor pairs.
"""
import io
import os
import pathlib
import pickle
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfdehaze import convert
from tfdehaze.data import io as image_io
from tfdehaze.models import registry
from tfdehaze.models.minet import MINet, MINetOfficial

SOTS = "sots_indoor_sample"


def _legacy_stream(main_pickle: bytes, storages=()):
    """A legacy torch.save byte stream around ``main_pickle``; storages: [(key, float32 array)]."""
    out = io.BytesIO()
    for header in (convert.LEGACY_MAGIC, convert.LEGACY_PROTOCOL,
                   {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}):
        pickle.dump(header, out, protocol=2)
    out.write(main_pickle)
    pickle.dump([key for key, _ in storages], out, protocol=2)
    for _, data in storages:
        out.write(np.int64(data.size).tobytes() + data.astype("<f4").tobytes())
    return out.getvalue()


class _Exploit:
    def __reduce__(self):
        return os.system, ("touch pwned",)


@pytest.mark.parametrize("where", ["main", "magic"])
def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"model": _Exploit()}, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_stream(payload) if where == "main" else payload)
    with pytest.raises(convert.UnsafeCheckpointError, match=r"evil\.pth.*refusing the global (posix|os|nt)\.system"):
        convert.load_torch_legacy(path)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ValueError):              # what the CLI reports as a one-line error
        convert.load_torch_legacy(path)


def test_stand_in_modules_run_no_code(tmp_path):
    """An authors' module class is an inert stand-in: a REDUCE on it records its arguments, nothing more."""
    path = tmp_path / "fake.pth"
    path.write_bytes(_legacy_stream(b"cMINet\nMI_Net\n(Vrm -rf /\ntR."))   # MINet.MI_Net("rm -rf /")
    obj = convert.load_torch_legacy(path)
    assert isinstance(obj, convert.TorchModule) and obj.torch_class == "MINet.MI_Net" and obj._args == ("rm -rf /",)
    with pytest.raises(convert.UnsafeCheckpointError, match="MINet.MI_Net"):
        convert.load_torch_legacy(path, module_packages=())


def test_not_a_legacy_checkpoint(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="x.pth.*not a legacy PyTorch checkpoint"):
        convert.load_torch_legacy(path)
    path.write_bytes(b"PK\x03\x04zip")
    with pytest.raises(ValueError, match="zip-format"):
        convert.load_torch_legacy(path)


def test_torch_written_legacy_checkpoint_reads_back(tmp_path):
    """Independent check of the format reader: tensors torch itself saved in the legacy format (views, offsets,
    shared storages, several dtypes) come back equal."""
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    state = {"w": torch.randn(3, 2, 5, 5), "t": base.t(), "slice": base[1:3, 2:], "same": base,
             "long": torch.arange(5), "half": torch.randn(4).half(), "scalar": torch.tensor(2.5)}
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    loaded = convert.load_torch_legacy(path)
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.numpy().dtype and loaded[key].shape == tuple(value.shape)
        np.testing.assert_array_equal(loaded[key], value.numpy())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="legacy.pth: truncated"):
        convert.load_torch_legacy(path)


def _numpy_conv_transpose(x, w, b, stride, padding):
    """PyTorch's ConvTranspose2d written out in NumPy: x (N, I, H, W), w (I, O, k, k), b (O,) -> (N, O, H', W'),
    H' = (H - 1) stride + k - 2 padding. Input pixel (i, j) adds x[:, :, i, j] @ w[:, :, a, b] to output pixel
    (i stride + a - padding, j stride + b - padding)."""
    n, _, height, width = x.shape
    k = w.shape[-1]
    full = np.zeros((n, w.shape[1], (height - 1) * stride + k, (width - 1) * stride + k))
    for i in range(height):
        for j in range(width):
            full[:, :, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum(
                "nc,cokl->nokl", x[:, :, i, j], w)
    return full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding] + b[None, :, None, None]


def test_transposed_convolution_layout_against_an_independent_numpy_computation(rng):
    """The converter's layout for the released ConvTranspose2d (deconv3: 64 -> 64, 4x4, stride 2, padding 1),
    checked against a NumPy transposed convolution on random weights, not against the converter's own mapping:
    swapping the in / out axes or flipping the kernel gives the same shapes, so only values can tell. With torch
    installed, the NumPy reference itself is checked against torch.nn.functional.conv_transpose2d."""
    model = MINetOfficial(steps=1)
    targets = convert.minet_official_targets(model)
    (kernel, to_keras), (bias, bias_to_keras) = targets["deconv3.weight"], targets["deconv3.bias"]
    assert kernel is model.deconv3.kernel and bias is model.deconv3.bias
    w = rng.normal(size=(64, 64, 4, 4)).astype(np.float32)          # PyTorch layout (in, out, kH, kW)
    b = rng.normal(size=64).astype(np.float32)
    kernel.assign(to_keras(w))
    bias.assign(bias_to_keras(b))
    x = rng.normal(size=(2, 5, 7, 64)).astype(np.float32)            # NHWC, odd sizes
    expected = _numpy_conv_transpose(x.transpose(0, 3, 1, 2).astype(np.float64), w, b, stride=2, padding=1)
    assert expected.shape == (2, 64, 10, 14)
    got = model.deconv3(x).numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    try:
        import torch
    except ImportError:
        return
    with torch.no_grad():
        reference = torch.nn.functional.conv_transpose2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                                                         torch.from_numpy(w), torch.from_numpy(b), stride=2,
                                                         padding=1).numpy()
    np.testing.assert_allclose(expected, reference, rtol=1e-4, atol=1e-4)


# ---- the released weights --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pth(reference_dir):
    path = reference_dir / "minet_official_its.pth"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def state(pth):
    return convert.minet_official_state(pth)


@pytest.fixture(scope="module")
def official(state):
    return convert.load_minet_official_state(MINetOfficial(), state)


def test_every_checkpoint_tensor_is_used_exactly_once(state, official):
    assert len(state) == 73 and sum(v.size for v in state.values()) == 628_078
    targets = convert.minet_official_targets(official)
    assert set(targets) == set(state)
    assert len({id(var) for var, _ in targets.values()}) == len(targets) == len(official.weights)
    for name, (var, transform) in targets.items():       # each weight holds exactly its tensor
        np.testing.assert_array_equal(var.numpy(), transform(state[name]))
    broken = dict(state)
    broken["extra.weight"] = broken.pop("res4.pre_conv2.weight")
    with pytest.raises(ValueError, match=r"unused \['extra.weight'\], missing \['res4.pre_conv2.weight'\]"):
        convert.load_minet_official_state(MINetOfficial(), broken)
    broken = dict(state, **{"gate.weight": state["gate.weight"][:, :128]})
    with pytest.raises(ValueError, match="gate.weight"):
        convert.load_minet_official_state(MINetOfficial(), broken)
    with pytest.raises(ValueError, match="fit only MINetOfficial"):
        convert.load_minet_official_state(MINet(filters=8, steps=1), state)


def test_convert_writes_atomically_and_registry_loads_it(pth, official, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDEHAZE_HOME", str(tmp_path / "home"))
    out = convert.convert_official_weights(pth)
    assert out == tmp_path / "home" / "weights" / "minet_official_its.weights.h5"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]        # no temporary left behind
    explicit = registry.load_preset_weights(MINetOfficial(steps=1), "minet-official", out)
    for model in (explicit, registry.load("minet-official"), registry.load("minet-official", steps=1)):
        assert type(model) is MINetOfficial and len(model.weights) == len(official.weights)
        for a, b in zip(model.weights, official.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="weights.h5"):
        convert.convert_official_weights(pth, tmp_path / "x.h5")


def test_cli(pth, tmp_path):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "data_prep"))
    try:
        import convert_minet
    finally:
        sys.path.pop(0)
    out = tmp_path / "m.weights.h5"
    assert convert_minet.main([str(pth), "--out", str(out)]) == 0 and out.is_file()
    with pytest.raises(SystemExit) as exit_info:                            # a user error exits, one line
        convert_minet.main([str(tmp_path / "missing.pth"), "--out", str(out)])
    assert exit_info.value.code == 2


def _torch_minet(w, x, torch):
    """Our own functional PyTorch re-implementation of the released MI_Net, from the checkpoint's tensor names
    and shapes. ``w``: {name: torch tensor}; ``x``: (N, 3, H, W) BGR 0-255."""
    F = torch.nn.functional

    def conv(name, x, stride=1, dilation=1):
        k = w[f"{name}.weight"]
        return F.conv2d(x, k, w.get(f"{name}.bias"), stride, dilation * (k.shape[-1] // 2), dilation)

    def norm(name, x):
        return F.instance_norm(x, weight=w[f"{name}.weight"], bias=w[f"{name}.bias"], eps=1e-5)

    def smooth(name, x):          # one k x k kernel for every channel, as a grouped convolution
        k = w[f"{name}.weight"]
        return F.conv2d(x, k.expand(x.shape[1], 1, *k.shape[-2:]), None, 1, k.shape[-1] // 2, 1, x.shape[1])

    def block(name, x, dilation=1, smoothed=False, residual=False):
        y = smooth(f"{name}.pre_conv1", x) if smoothed else x
        y = F.relu(norm(f"{name}.norm1", conv(f"{name}.conv1", y, dilation=dilation)))
        y = smooth(f"{name}.pre_conv2", y) if smoothed else y
        y = norm(f"{name}.norm2", conv(f"{name}.conv2", y))
        return F.relu(x + y if residual else y)

    h = F.relu(norm("norm1", conv("conv1", x)))
    h = F.relu(norm("norm2", conv("conv2", h)))
    h = F.relu(norm("norm3", conv("conv3", h, stride=2)))
    for i in range(3):
        h = block(f"pre_processing.{i}", h, residual=True)
    levels = []
    for name, dilation in (("res1", 1), ("res2", 2), ("res4", 4)):
        g0 = h
        for _ in range(8):
            h = block(name, h, dilation, smoothed=dilation > 1) + g0
        levels.append(h)
    gates = conv("gate", torch.cat(levels, dim=1))
    h = sum(gates[:, i:i + 1] * level for i, level in enumerate(levels))
    h = F.conv_transpose2d(h, w["deconv3.weight"], w["deconv3.bias"], stride=2, padding=1)
    h = F.relu(norm("norm4", h))
    h = conv("deconv1", F.relu(norm("norm5", conv("deconv2", h))))
    y = F.leaky_relu(conv("conv_su1", h) + conv("conv_su2", x), 0.1)
    d = conv("layer1.0", y).mean(dim=(2, 3), keepdim=True)
    psi = torch.sigmoid(F.linear(F.linear(d, w["layer1.2.weight"], w["layer1.2.bias"]),
                                 w["layer1.3.weight"], w["layer1.3.bias"]))
    return conv("deconv", y + y * psi)


def _sots_pairs(reference_dir):
    root = reference_dir / SOTS
    pairs = [(h, root / "clear" / f"{h.stem.split('_')[0]}.png") for h in sorted((root / "hazy").glob("*.png"))]
    if not pairs:
        pytest.skip(f"no SOTS pairs in {root}")
    return pairs


def test_pytorch_parity_on_a_real_crop(reference_dir, state, official):
    torch = pytest.importorskip("torch")
    hazy = image_io.read_image(_sots_pairs(reference_dir)[0][0])[100:196, 200:328]       # 96 x 128, real haze
    weights = {k: torch.from_numpy(v) for k, v in state.items()}
    with torch.no_grad():
        bgr = torch.from_numpy(np.ascontiguousarray(hazy[None, :, :, ::-1].transpose(0, 3, 1, 2) * 255))
        expected = _torch_minet(weights, bgr, torch).numpy().transpose(0, 2, 3, 1)[..., ::-1]      # BGR 0-255
    assert expected.std() > 10                                                            # a real image came out
    for run in (official, tf.function(official)):                                        # eager and graph
        got = run(hazy[None])["dehazed"].numpy() * 255
        np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)


def test_psnr_on_real_sots_indoor_pairs(reference_dir, official):
    """Full-size pairs (620 x 460) as the authors evaluate; SPEC: ~37 dB on SOTS indoor with the authors' code."""
    dehaze = tf.function(lambda x: official(x)["dehazed"])
    for hazy_path, clear_path in _sots_pairs(reference_dir)[:3]:
        hazy, clear = image_io.read_image(hazy_path), image_io.read_image(clear_path)
        out = np.clip(dehaze(hazy[None]).numpy()[0], 0, 1)
        psnr_in = float(tf.image.psnr(hazy, clear, 1.0))
        psnr_out = float(tf.image.psnr(out, clear, 1.0))
        assert psnr_out >= 35.0 and psnr_out > psnr_in + 15, (hazy_path.name, psnr_in, psnr_out)


def test_official_model_serialises(official, tmp_path, rng):
    x = rng.uniform(size=(1, 40, 52, 3)).astype(np.float32)
    path = tmp_path / "official.keras"
    official.save(path)
    import keras

    loaded = keras.saving.load_model(path)
    assert type(loaded) is MINetOfficial and loaded.get_config() == official.get_config()
    np.testing.assert_allclose(loaded(x)["dehazed"].numpy(), official(x)["dehazed"].numpy(), atol=1e-5)
