"""``tfdehaze-train MODEL``: train a model from its recipe (argument parsing only; the work is `tfdehaze.train.train`).

Recipe resolution: the named recipe (or, with ``--resume``, the run's own ``config.json``), then ``--config FILE``
(a JSON object of recipe fields), then the flags. Without ``--data``/``--manifest`` the bundled sample set is used.
"""
import argparse
import atexit
import os
import pathlib
import shlex
import sys

from tfdehaze.cli import Parser, key_value, quiet_tensorflow, run_cli
from tfdehaze.precision import POLICIES
from tfdehaze.train import recipes, strategy  # names and field checks only: no TensorFlow yet

PROG = "tfdehaze-train"


def _recipe_name(text):
    """MODEL: a built-in recipe name (checked before TensorFlow starts)."""
    try:
        recipes.get_recipe(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _field(name):
    """The argparse type of the flag of integer recipe field ``name``: the recipe's own type and range check
    (`tfdehaze.train.recipes.FIELDS`), so ``--steps 0`` stops here, before TensorFlow starts."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        problem = recipes.FIELDS[name]._replace(null=False).problem(value)  # a flag cannot be null
        if problem:
            raise argparse.ArgumentTypeError(f"recipe field {name} {problem}")
        return value
    return parse


def _parser():
    parser = Parser(prog=PROG, description="Train a dehazing model from its paper's recipe.")
    parser.add_argument("model", metavar="MODEL", type=_recipe_name,
                        help=f"recipe name: {', '.join(recipes.names())}")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data", nargs=2, metavar=("HAZY_DIR", "CLEAR_DIR"), help="folders of paired images")
    data.add_argument("--manifest", metavar="CSV", help="a manifest CSV with columns hazy, clear")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_field("steps"), metavar="N", help="training steps (global batches)")
    length.add_argument("--epochs", type=_field("epochs"), metavar="N", help="passes over the data")
    parser.add_argument("--batch-size", type=_field("batch_size"), metavar="B",
                        help="global batch size (split across replicas)")
    parser.add_argument("--image-size", type=_field("image_size"), metavar="S",
                        help="training images are resized to S x S")
    parser.add_argument("--seed", type=_field("seed"), help="seed for weights, shuffling and augmentation")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<model>-<timestamp>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--distribute", choices=strategy.KINDS, default="auto",
                        help="auto: all local GPUs when there are several; multi-worker: reads TF_CONFIG")
    parser.add_argument("--config", metavar="FILE", help="JSON object of recipe fields overriding the recipe")
    parser.add_argument("--teacher", metavar="RUN_DIR",
                        help="distillation (kddn, rfd): the teacher's run directory (trained with kddn-teacher / "
                             "rfd-teacher); it is loaded from its latest checkpoint and frozen")
    parser.add_argument("--vgg19-weights", metavar="H5",
                        help="ImageNet VGG19 weights (Keras' vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5) for "
                             "the perceptual loss (kddn); or set TFDEHAZE_VGG19_WEIGHTS")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="model constructor override (repeatable; VALUE is JSON, else a string), "
                             "e.g. --model-arg depth=7 --model-arg radius=15")
    parser.add_argument("--precision", choices=("auto",) + POLICIES,
                        help="Keras dtype policy (recipe field precision, default auto: mixed_bfloat16 on CPUs with "
                             "bfloat16 units and GPUs of compute capability >= 8, mixed_float16 on 7.x, else float32)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _recipe(args):
    """The flags, as `tfdehaze.train.recipes.resolve` arguments."""
    from tfdehaze.train.recipes import resolve

    data = ({"hazy": args.data[0], "clear": args.data[1]} if args.data
            else {"manifest": args.manifest} if args.manifest else None)
    return resolve(args.model, run_dir=args.out, resume=args.resume, config_file=args.config,
                   model_args=dict(map(key_value, args.model_arg)), data=data, teacher=args.teacher,
                   loss_options={"perceptual": {"weights_path": str(pathlib.Path(args.vgg19_weights).resolve())}}
                   if args.vgg19_weights else None,
                   precision=args.precision, batch_size=args.batch_size, image_size=args.image_size, seed=args.seed,
                   steps=args.steps, epochs=args.epochs)


def main(argv=None):
    args = _parser().parse_args(argv)
    run_cli(PROG, lambda: _recipe(args))  # bad --config values stop here, before TensorFlow starts
    quiet_tensorflow()
    from tfdehaze.train import NonFiniteLossError, WorkerLostError, default_run_dir, train

    lost = []

    def job():
        if args.resume and not args.out:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
        recipe = _recipe(args)
        run_dir = pathlib.Path(args.out) if args.out else default_run_dir(args.model)
        try:
            result = train(recipe, run_dir=run_dir, resume=args.resume, distribute=args.distribute,
                           verbose=0 if args.quiet else 1)
        except WorkerLostError as error:  # say exactly what each worker runs to continue
            words = list(sys.argv[1:] if argv is None else argv)
            words += [] if args.out else ["--out", str(run_dir)]
            error.command = shlex.join([PROG] + words + ([] if args.resume else ["--resume"]))
            lost.append(error)
            raise
        print(f"Run directory: {result['run_dir']}")
        print(f"Checkpoints:   {pathlib.Path(result['run_dir']) / 'checkpoints'} (latest: {result['checkpoint']})")
        if "weights" in result:
            print(f"Final weights: {result['weights']}" + (f" and {result['keras']}" if "keras" in result else ""))

    try:
        return run_cli(PROG, job, fatal=(NonFiniteLossError, WorkerLostError))
    except SystemExit:
        if lost:  # TensorFlow's shutdown would wait for the lost worker (seconds to half a minute): leave now,
            atexit._run_exitfuncs()  # after the Python clean-ups (autograph's temporary files)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        raise


if __name__ == "__main__":
    sys.exit(main())
