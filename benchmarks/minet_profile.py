"""Where MI-Net's inference time goes, in tfdehaze and in PyTorch: the network's building blocks at its working
size, side by side, and (``--ops``) TensorFlow's own per-op-type profile of one forward pass.

    python benchmarks/minet_profile.py [--size 460x620] [--threads T] [--rounds 7] [--max-isa ISA] [--ops] [--quick]

Blocks (at half the input size, 64 channels, as inside `MINetOfficial`): the 3x3 convolution (dilation 1, 2, 4: Keras
dilates through SpaceToBatchND, ``tf.nn.conv2d(dilations=...)`` asks oneDNN directly, and
`tfdehaze.layers.implicit.conv2d_same` picks by CPU, see `tfdehaze.layers.normalization.cpu_isa`), instance norm + ReLU
(`tfdehaze.layers.InstanceNormalization`, Keras' ``GroupNormalization(groups=-1)`` which it replaced, PyTorch's
``F.instance_norm``), the shared smoothing depthwise convolution (3x3, 7x7) and the residual add. Each is called
``--rounds`` times, interleaved; the table gives the median CPU milliseconds of the process per call (steady on a
loaded machine) and the median wall milliseconds. ``--max-isa`` caps both libraries' kernels as in
benchmarks/minet_vs_torch.py (``AVX512_CORE``: no bfloat16 units, ``AVX2``: no AVX-512). ``--ops`` profiles one
forward of the whole network (random weights) with ``tf.profiler`` and sums the time per op type. PyTorch is
optional (the ``convert`` extra); without it only the TensorFlow rows are printed.
"""
import argparse
import glob
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_ISAS = {"AVX2": "avx2", "AVX512_CORE": "avx512"}      # oneDNN's name -> PyTorch's


def _blocks(tf, keras, torch, h, w, c):
    from tfdehaze.layers.implicit import conv2d_same
    from tfdehaze.layers.normalization import InstanceNormalization

    rng = tf.random.Generator.from_seed(0)
    x = rng.normal([1, h, w, c]) * 3.0 + 1.0
    kernel = rng.normal([3, 3, c, c]) * 0.05
    norm = InstanceNormalization()
    norm.build(x.shape)
    blocks = {}
    for d in (1, 2, 4):
        conv = keras.layers.Conv2D(c, 3, padding="same", dilation_rate=d, use_bias=False)
        conv.build(x.shape)
        conv.kernel.assign(kernel)
        blocks[f"conv 3x3 d{d}, Keras Conv2D"] = ("tf", tf.function(conv))
        blocks[f"conv 3x3 d{d}, tfdehaze conv2d_same"] = ("tf", tf.function(lambda t, conv=conv: conv2d_same(conv, t)))
        if d > 1:
            blocks[f"conv 3x3 d{d}, tf.nn.conv2d"] = ("tf", tf.function(
                lambda t, d=d: tf.nn.conv2d(t, kernel, 1, "SAME", dilations=d)))
    blocks["instance norm + ReLU, tfdehaze"] = ("tf", tf.function(lambda t: tf.nn.relu(norm(t))))
    blocks["instance norm + ReLU, Keras GN"] = ("tf", tf.function(
        lambda t: tf.nn.relu(keras.layers.GroupNormalization.call(norm, t))))
    for k in (3, 7):
        smooth = tf.tile(rng.normal([k, k])[:, :, None, None], [1, 1, c, 1])
        blocks[f"smoothing depthwise {k}x{k}"] = ("tf", tf.function(
            lambda t, s=smooth: tf.nn.depthwise_conv2d(t, s, [1, 1, 1, 1], "SAME")))
    blocks["residual add"] = ("tf", tf.function(lambda t: t + x))
    if torch is None:
        return x, blocks
    F = torch.nn.functional
    xt = torch.from_numpy(x.numpy().transpose(0, 3, 1, 2).copy())
    kt = torch.from_numpy(kernel.numpy().transpose(3, 2, 0, 1).copy())
    ones, zeros = torch.ones(c), torch.zeros(c)
    for d in (1, 2, 4):
        blocks[f"conv 3x3 d{d}, PyTorch"] = ("torch", lambda _, d=d: F.conv2d(xt, kt, None, 1, d, d))
    blocks["instance norm + ReLU, PyTorch"] = ("torch", lambda _: F.relu(F.instance_norm(xt, None, None, ones,
                                                                                              zeros, eps=1e-5)))
    for k in (3, 7):
        st = torch.randn(1, 1, k, k).expand(c, 1, k, k)
        blocks[f"smoothing depthwise {k}x{k}, PyTorch"] = ("torch", lambda _, s=st, k=k: F.conv2d(xt, s, None, 1,
                                                                                                   k // 2, 1, c))
    blocks["residual add, PyTorch"] = ("torch", lambda _: xt + xt)
    return x, blocks


def _op_profile(tf, size, top=12):
    """Seconds per op type of one forward of MINetOfficial (tf.profiler; the xplane reader is TensorFlow's own)."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    from tfdehaze.models.minet import MINetOfficial

    model = MINetOfficial()
    forward = tf.function(lambda t: model(t)["dehazed"])
    image = tf.random.uniform([1, *size, 3])
    forward(image)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        forward(image).numpy()
        tf.profiler.experimental.stop()
        data, ok = plugin.xspace_to_tools_data(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True),
                                               "framework_op_stats", {})
    if not ok:
        return []
    table = json.loads(data)[0]
    columns = [col["id"] for col in table["cols"]]
    totals = {}
    for row in table["rows"]:
        values = dict(zip(columns, [cell["v"] for cell in row["c"]]))
        if values["type"] != "IDLE":
            totals[values["type"]] = totals.get(values["type"], 0.0) + values["total_self_time"] / 1e6
    return sorted(totals.items(), key=lambda item: -item[1])[:top]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="460x620", help="network input HxW (the blocks run at half of it)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-isa", choices=sorted(_ISAS), help="emulate an older CPU (see the module docstring)")
    parser.add_argument("--ops", action="store_true", help="also profile one forward of the network per op type")
    parser.add_argument("--quick", action="store_true", help="a 64x64 input, 2 rounds: checks the script runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.rounds = "64x64", 2
    if args.max_isa:
        os.environ["ONEDNN_MAX_CPU_ISA"], os.environ["ATEN_CPU_CAPABILITY"] = args.max_isa, _ISAS[args.max_isa]
    size = tuple(int(v) for v in args.size.lower().split("x"))

    import keras
    import tensorflow as tf
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    h, w = (size[0] + 1) // 2, (size[1] + 1) // 2
    x, blocks = _blocks(tf, keras, torch, h, w, 64)
    cpu, wall = {name: [] for name in blocks}, {name: [] for name in blocks}
    context = torch.no_grad() if torch is not None else None
    if context is not None:
        context.__enter__()
    for _, run in blocks.values():
        run(x)
    for _ in range(args.rounds):
        for name, (kind, run) in blocks.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            out = run(x)
            _ = out[0, 0, 0, 0].numpy() if kind == "tf" else float(out[0, 0, 0, 0])
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    if context is not None:
        context.__exit__(None, None, None)
    isa = f", instruction sets capped at {args.max_isa}" if args.max_isa else ""
    from tfdehaze.layers.normalization import cpu_isa

    print(f"MI-Net blocks at {h}x{w}x64 (input {size[0]}x{size[1]}), {args.rounds} interleaved rounds, "
          f"{args.threads} threads{isa} (tfdehaze kernels for: {cpu_isa()}); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'block':<42} {'CPU ms':>8} {'wall ms':>8}")
    for name in sorted(blocks, key=lambda n: (n.split(",")[0], n)):
        print(f"{name:<42} {1000 * statistics.median(cpu[name]):>8.2f} {1000 * statistics.median(wall[name]):>8.2f}")
    if args.ops:
        print(f"\nTensorFlow op types, one forward of MINetOfficial at {size[0]}x{size[1]} (self time, s):")
        for op_type, seconds in _op_profile(tf, size):
            print(f"  {op_type:<40} {seconds:8.3f}")


if __name__ == "__main__":
    main()
