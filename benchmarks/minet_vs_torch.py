"""MI-Net (the released network) in tfdehaze against the same network in PyTorch, on the same images and threads.

    python benchmarks/minet_vs_torch.py [--weights PTH] [--images N] [--rounds 2] [--threads T] [--max-isa ISA]
                                        [--quick]

The PyTorch side is the functional re-implementation the converter's parity test checks our model against
(``_torch_minet`` in tests/models/test_minet_official.py), run under ``torch.no_grad()`` with
``torch.set_num_threads(T)``; TensorFlow gets ``T`` intra-op threads. The Keras model (`MINetOfficial`, weights
converted from the same checkpoint) runs compiled (`tf.function`, the first call excluded) in float32 and under
``mixed_bfloat16``. Images: the SOTS-indoor hazy images of ``../shared/reference`` (620x460) when present, else
random ones of that size. Rounds are interleaved (tf, torch, tf, torch, ...) and the table gives each side's median
seconds per image and the ratio tfdehaze / PyTorch (below 1: tfdehaze is faster), in wall time and in CPU time of
the process. On a loaded machine the wall times swing with the other processes (and PyTorch's OpenMP threads spin
while they wait, which costs it more there); ``--threads 1`` and the CPU-time ratio are the steadier comparison.

``--max-isa AVX512_CORE`` (a CPU with AVX-512 but no bfloat16 units) or ``--max-isa AVX2`` (no AVX-512) caps the
instruction sets both libraries' kernels use (oneDNN's ``ONEDNN_MAX_CPU_ISA`` and PyTorch's
``ATEN_CPU_CAPABILITY``), to see the ratio of older or smaller CPUs on this one.

Needs the convert extra (``pip install -e ".[convert]"``: torch) and the authors' checkpoint (``--weights``,
default ``../shared/reference/minet_official_its.pth``); ``--quick`` runs one round on one 64x64 random image
(without the checkpoint it says so and exits 0).
"""
import argparse
import importlib.util
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = pathlib.Path(os.environ.get("TFDEHAZE_REFERENCE", REPO.parent / "shared" / "reference"))
_ISAS = {"AVX2": "avx2", "AVX512_CORE": "avx512"}      # oneDNN's name -> PyTorch's


def _torch_definition():
    spec = importlib.util.spec_from_file_location("parity", REPO / "tests" / "models" / "test_minet_official.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._torch_minet


def _images(count, size, quick):
    import numpy as np

    from tfdehaze.data import io as image_io
    hazy = sorted((REFERENCE / "sots_indoor_sample" / "hazy").glob("*.png"))
    if hazy and not quick:
        return [image_io.read_image(path) for path in hazy[:count]]
    rng = np.random.default_rng(0)
    return [rng.uniform(size=(*size, 3)).astype(np.float32) for _ in range(count)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(REFERENCE / "minet_official_its.pth"))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-isa", choices=sorted(_ISAS), help="emulate an older CPU (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help="one round, one 64x64 image: checks the script runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds = 1, 1
    if args.max_isa:                                # read by oneDNN and PyTorch when they load: before the imports
        os.environ["ONEDNN_MAX_CPU_ISA"], os.environ["ATEN_CPU_CAPABILITY"] = args.max_isa, _ISAS[args.max_isa]

    import numpy as np
    import tensorflow as tf
    try:
        import torch
    except ImportError:
        sys.exit("PyTorch is not installed: pip install -e '.[convert]'")
    torch.set_num_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from tfdehaze import convert, precision
    from tfdehaze.models.minet import MINetOfficial

    if not pathlib.Path(args.weights).is_file():
        print(f"{args.weights} not found: pass --weights PATH to the authors' minet_official_its.pth; nothing timed")
        sys.exit(0 if args.quick else 1)
    state, weights_note = convert.minet_official_state(args.weights), "released weights"
    images = _images(args.images, (64, 64) if args.quick else (460, 620), args.quick)

    runs = {}
    skipped = []
    for policy in ("float32", "mixed_bfloat16"):
        try:
            with precision.policy(policy):
                model = convert.load_minet_official_state(MINetOfficial(), state)
            runs[f"tfdehaze {policy}"] = _keras_runner(model, tf)
            runs[f"tfdehaze {policy}"](images[0])
        except tf.errors.OpError as error:         # e.g. no bfloat16 kernels below AVX-512 (--max-isa AVX2)
            runs.pop(f"tfdehaze {policy}", None)
            skipped.append(f"tfdehaze {policy}: not run, {type(error).__name__} (no kernels for it on this CPU?)")
    torch_minet = _torch_definition()
    weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}

    def run_torch(image):
        with torch.no_grad():
            bgr = torch.from_numpy(np.ascontiguousarray(image[None, :, :, ::-1].transpose(0, 3, 1, 2) * 255))
            return torch_minet(weights, bgr, torch).numpy()
    runs["PyTorch float32"] = run_torch

    for run in runs.values():                       # warm up: tracing, oneDNN primitive caches
        run(images[0])
    times = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(args.rounds):
        for image in images:
            for name, run in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                run(image)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    torch_median = statistics.median(times["PyTorch float32"])
    torch_cpu = statistics.median(cpu["PyTorch float32"])
    h, w = images[0].shape[:2]
    isa = f", instruction sets capped at {args.max_isa}" if args.max_isa else ""
    print(f"MI-Net official ({weights_note}), {len(images)} images of {w}x{h}, {args.rounds} interleaved rounds, "
          f"{args.threads} threads{isa} (tf {tf.__version__}, torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'run':<26} {'median s/image':>15} {'min':>8} {'vs PyTorch':>11} {'CPU s/image':>12} {'vs PyTorch':>11}")
    for name, values in times.items():
        median, median_cpu = statistics.median(values), statistics.median(cpu[name])
        print(f"{name:<26} {median:>15.3f} {min(values):>8.3f} {median / torch_median:>10.2f}x "
              f"{median_cpu:>12.3f} {median_cpu / torch_cpu:>10.2f}x")
    for note in skipped:
        print(note)


def _keras_runner(model, tf):
    call = tf.function(lambda x: model(x)["dehazed"], reduce_retracing=True)
    return lambda image: call(image[None]).numpy()


if __name__ == "__main__":
    main()
