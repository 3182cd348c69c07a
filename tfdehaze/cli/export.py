"""tfdehaze-export: write a trained model as a TF Serving SavedModel version, MODEL_BASE_PATH/N/."""
from __future__ import annotations

from tfdehaze.cli import Parser, key_value, run_cli


def _parser() -> Parser:
    parser = Parser(prog="tfdehaze-export", description=(
        "Export a model for TensorFlow Serving: writes MODEL_BASE_PATH/VERSION/ atomically, with the signatures "
        "serving_default (encoded image bytes -> PNG bytes: dehazed_bytes[, transmission_bytes]) and dehaze "
        "(float32 [0, 1] NHWC -> dehazed[, transmission])."))
    parser.add_argument("source", help="a run directory (config.json + checkpoints or model.weights.h5), a .keras "
                                       "file, a .weights.h5 file (with --model) or a preset name (minet-official)")
    parser.add_argument("--model", help="registered model name (required for a .weights.h5 file)")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="model constructor override (repeatable; VALUE is JSON, else a string)")
    parser.add_argument("--out", required=True, metavar="MODEL_BASE_PATH",
                        help="model base path, e.g. exports/gp2p (TF Serving's --model_base_path)")
    parser.add_argument("--version", type=int, help="version number (default: newest existing + 1, or 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def job():
        from tfdehaze.export import export

        path = export(args.source, args.out, model=args.model, version=args.version, overwrite=args.overwrite,
                      model_kwargs=dict(map(key_value, args.model_arg)))
        print(path)

    return run_cli("tfdehaze-export", job, tensorflow=True)


if __name__ == "__main__":
    raise SystemExit(main())
