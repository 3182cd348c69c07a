"""``tfdehaze-train MODEL``: train a model from its recipe (argument parsing only; the work is `tfdehaze.train.train`).

Recipe resolution: the named recipe (or, with ``--resume``, the run's own ``config.json``), then ``--config FILE``
(a JSON object of recipe fields), then the flags. Without ``--data``/``--manifest`` the bundled sample set is used.
"""
import pathlib
import sys

from tfdehaze.cli import Parser, key_value, run_cli

PROG = "tfdehaze-train"


def _parser():
    from tfdehaze.train import recipes, strategy
    parser = Parser(prog=PROG, description="Train a dehazing model from its paper's recipe.")
    parser.add_argument("model", metavar="MODEL", help=f"recipe name: {', '.join(recipes.names())}")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data", nargs=2, metavar=("HAZY_DIR", "CLEAR_DIR"), help="folders of paired images")
    data.add_argument("--manifest", metavar="CSV", help="a manifest CSV with columns hazy, clear")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, metavar="N", help="training steps (global batches)")
    length.add_argument("--epochs", type=int, metavar="N", help="passes over the data")
    parser.add_argument("--batch-size", type=int, metavar="B", help="global batch size (split across replicas)")
    parser.add_argument("--image-size", type=int, metavar="S", help="training images are resized to S x S")
    parser.add_argument("--seed", type=int, help="seed for weights, shuffling and augmentation")
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
                   batch_size=args.batch_size, image_size=args.image_size, seed=args.seed, steps=args.steps,
                   epochs=args.epochs)


def main(argv=None):
    args = _parser().parse_args(argv)
    from tfdehaze.train import NonFiniteLossError, default_run_dir, train

    def job():
        if args.resume and not args.out:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
        recipe = _recipe(args)
        run_dir = pathlib.Path(args.out) if args.out else default_run_dir(args.model)
        result = train(recipe, run_dir=run_dir, resume=args.resume, distribute=args.distribute,
                       verbose=0 if args.quiet else 1)
        print(f"Run directory: {result['run_dir']}")
        print(f"Checkpoints:   {pathlib.Path(result['run_dir']) / 'checkpoints'} (latest: {result['checkpoint']})")
        if "weights" in result:
            print(f"Final weights: {result['weights']}" + (f" and {result['keras']}" if "keras" in result else ""))

    return run_cli(PROG, job, fatal=(NonFiniteLossError,))


if __name__ == "__main__":
    sys.exit(main())
