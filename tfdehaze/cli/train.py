"""``tfdehaze-train MODEL``: train a model from its recipe (argument parsing only; the work is `tfdehaze.train.train`).

Recipe resolution: the named recipe (or, with ``--resume``, the run's own ``config.json``), then ``--config FILE``
(a JSON object of recipe fields), then the flags. Without ``--data``/``--manifest`` the bundled sample set is used.
"""
import json
import pathlib
import sys

from tfdehaze.cli import Parser, run_cli

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
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="model constructor override (repeatable; VALUE is JSON, else a string), "
                             "e.g. --model-arg depth=7 --model-arg radius=15")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _resolve_recipe(args):
    """The recipe for ``args``: named recipe or the run's config.json, then --config, then flags."""
    from tfdehaze.train import Recipe, get_recipe
    recipe = get_recipe(args.model)
    saved = pathlib.Path(args.out) / "config.json" if args.out else None
    if args.resume and saved is not None and saved.exists():
        recipe = Recipe.from_json(saved.read_text())
        if recipe.model != get_recipe(args.model).model:
            raise ValueError(f"{saved} is a run of model {recipe.model!r}, not {args.model!r}")
    if args.config:
        path = pathlib.Path(args.config)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        try:
            overrides = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {path} is not valid JSON: {error}") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"config file {path} must hold a JSON object of recipe fields")
        if "model" in overrides and overrides["model"] != recipe.model:
            raise ValueError(f"config file {path} is for model {overrides['model']!r}, not {recipe.model!r}")
        recipe = recipe.replace(**overrides)
    changes = {name: getattr(args, name) for name in ("batch_size", "image_size", "seed")
               if getattr(args, name) is not None}
    if args.model_arg:
        changes["model_kwargs"] = {**recipe.model_kwargs, **dict(map(_model_arg, args.model_arg))}
    if args.steps is not None:
        changes.update(steps=args.steps, epochs=None)
    if args.epochs is not None:
        changes.update(epochs=args.epochs, steps=None)
    if args.data:
        for folder in args.data:
            if not pathlib.Path(folder).is_dir():
                raise ValueError(f"data folder {folder} does not exist")
        changes["data"] = {"hazy": str(pathlib.Path(args.data[0]).resolve()),
                           "clear": str(pathlib.Path(args.data[1]).resolve())}
    if args.manifest:
        if not pathlib.Path(args.manifest).is_file():
            raise ValueError(f"manifest {args.manifest} does not exist")
        changes["data"] = {"manifest": str(pathlib.Path(args.manifest).resolve())}
    return recipe.replace(**changes)


def _model_arg(text):
    """``KEY=VALUE`` -> (key, value); VALUE parsed as JSON (numbers, true/false, lists), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--model-arg takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv=None):
    args = _parser().parse_args(argv)
    from tfdehaze.train import NonFiniteLossError, default_run_dir, train

    def job():
        if args.resume and not args.out:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
        recipe = _resolve_recipe(args)
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
