"""Time and peak memory of RFD's spatial feature affinity loss (L2): ours (C x C products, never P x P) against the
naive computation that builds the two P x P affinity matrices.

    python benchmarks/feature_affinity.py [--sizes 460x620 512x512] [--batch 1] [--repeats 3] [--quick]

A size is the student's image (H x W); the teacher's x2 SR output is 2H x 2W. With the default pooling (teacher 1/8,
student 1/4) the grid is H/4 x W/4: P = 115 * 155 = 17,825 positions at the paper's 460 x 620, P = 16,384 at
512 x 512, so one P x P float32 matrix is ~1.2 GB per image.

Each row runs in a FRESH subprocess (high-water marks do not mix): the loss is compiled (`tf.function` with unknown
spatial sizes) and traced on a tiny input first, then run on the full-size random features ``--repeats`` + 1 times;
"fwd" evaluates the loss, "fwd+bwd" the loss and its gradient with respect to the student's features (a training
step's share). Memory columns:

- "TF peak": TensorFlow's CPU allocator high-water mark during the full-size runs
  (`tf.config.experimental.get_memory_info("CPU:0")["peak"]` after `reset_memory_stats`; it works on CPU in TF 2.21
  and counts tensors, rounded to allocator bins); "- inputs" subtracts the two input tensors (13 + 3 MB at
  460 x 620), leaving what the loss itself allocates;
- "RSS +": growth of the subprocess's resident-set high-water mark (``ru_maxrss``) over its value just before the
  full-size runs: everything, oneDNN scratch and allocator caching included, page-granular (~MB noise).

The machine is shared: times are noisy; the memory columns are what to read. ``--quick``: a 32 x 32 student, one
repeat, fwd+bwd only, both methods (seconds; checks that the script runs).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def child(height, width, method, mode, batch, repeats):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from tfdehaze.losses.affinity import feature_affinity_loss, pool_features

    def naive(teacher, student):
        f = tf.reshape(pool_features(teacher, 8), [tf.shape(teacher)[0], -1, 3])
        g = tf.reshape(pool_features(student, 4), [tf.shape(student)[0], -1, 3])
        positions = tf.cast(tf.shape(f)[1], tf.float32)
        diff = tf.matmul(f, f, transpose_b=True) - tf.matmul(g, g, transpose_b=True)    # (N, P, P)
        return tf.sqrt(tf.reduce_sum(tf.square(diff), axis=[1, 2])) / positions ** 2

    loss = feature_affinity_loss if method == "ours" else naive
    spec = [tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, None, 3])]

    @tf.function(input_signature=spec)
    def forward(teacher, student):
        return loss(teacher, student)

    @tf.function(input_signature=spec)
    def forward_backward(teacher, student):
        with tf.GradientTape() as tape:
            tape.watch(student)
            value = tf.reduce_sum(loss(teacher, student))
        return value, tape.gradient(value, student)

    fn = forward if mode == "fwd" else forward_backward
    fn(tf.random.uniform([1, 64, 64, 3]), tf.random.uniform([1, 32, 32, 3]))               # trace on a tiny input
    teacher = tf.random.uniform([batch, 2 * height, 2 * width, 3], seed=0)
    student = tf.random.uniform([batch, height, width, 3], seed=1)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tf.config.experimental.reset_memory_stats("CPU:0")
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        out = fn(teacher, student)
        _ = [t.numpy() for t in tf.nest.flatten(out)]
        times.append(time.perf_counter() - start)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    value = float(tf.reduce_sum(out if mode == "fwd" else out[0]))
    inputs = 4 * (int(tf.size(teacher)) + int(tf.size(student))) / 2 ** 20
    print(json.dumps({"time_s": statistics.median(times[1:]), "first_s": times[0], "tf_peak_mb": peak,
                      "inputs_mb": inputs, "rss_mb": rss, "value": value}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["460x620", "512x512"], help="student image sizes HxW")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=["ours", "naive"], choices=["ours", "naive"])
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    p.add_argument("--quick", action="store_true", help="32x32, 1 repeat, fwd+bwd: checks the script runs")
    p.add_argument("--child", nargs=4, metavar=("H", "W", "METHOD", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.modes = ["32x32"], 1, ["fwd+bwd"]
    if args.child:
        h, w, method, mode = args.child
        return child(int(h), int(w), method, mode, args.batch, args.repeats)

    print(f"RFD spatial affinity L2, teacher 2H x 2W pooled 1/8, student H x W pooled 1/4, batch {args.batch}, "
          f"float32, CPU; median of {args.repeats} runs after one; fresh subprocess per row")
    print(f"{'student HxW':>11} {'P':>6} {'PxP MB':>7} {'method':>6} {'mode':>7} {'time s':>7} {'TF peak MB':>10} "
          f"{'- inputs':>8} {'RSS + MB':>8}  loss")
    for size in args.sizes:
        h, w = (int(v) for v in size.lower().split("x"))
        positions = (h // 4) * (w // 4)
        for method in args.methods:
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--batch", str(args.batch), "--repeats", str(args.repeats),
                       "--child", str(h), str(w), method, mode]
                run = subprocess.run(cmd, capture_output=True, text=True)
                lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
                matrix_mb = 4 * positions ** 2 * args.batch / 2 ** 20
                head = f"{size:>11} {positions:>6} {matrix_mb:>7.0f} {method:>6} {mode:>7}"
                if run.returncode != 0 or not lines:
                    reason = (run.stderr.strip().splitlines() or ["?"])[-1][:70]
                    print(f"{head}  failed (exit {run.returncode}): {reason}")
                    continue
                r = json.loads(lines[-1])
                print(f"{head} {r['time_s']:>7.3f} {r['tf_peak_mb']:>10.1f} {r['tf_peak_mb'] - r['inputs_mb']:>8.1f} "
                      f"{r['rss_mb']:>8.1f}  {r['value']:.6g}")


if __name__ == "__main__":
    main()
