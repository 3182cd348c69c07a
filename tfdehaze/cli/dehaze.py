"""``tfdehaze-dehaze INPUT... --out DIR [--method dcp | --model NAME_OR_PATH] [--save-transmission]``."""
from __future__ import annotations

import argparse
import sys

from tfdehaze.cli import Parser, quiet_tensorflow, run_cli
from tfdehaze.precision import POLICIES

PROG = "tfdehaze-dehaze"


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Dehaze image files or folders of images; writes <name>.png into --out "
                    "(inputs are never overwritten). All or nothing for bad inputs: every input is read (header, "
                    "pixel limit, full decode) before anything is written, so a corrupt, truncated, non-image or "
                    "oversized file stops the run with an error naming it and --out unchanged.")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files and/or folders of images")
    p.add_argument("--out", metavar="DIR", help="output folder (created if needed; required with INPUT)")
    p.add_argument("--list-models", action="store_true",
                   help="list the registered models and the released weights (presets) they can load, then exit")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--method", default="dcp", choices=["dcp"],
                     help="classical method used when no --model is given (default: dcp, the dark-channel prior)")
    src.add_argument("--model", metavar="NAME_OR_PATH",
                     help="a registered model name (e.g. minet-official) or a .keras file written by tfdehaze-train")
    p.add_argument("--save-transmission", action="store_true",
                   help="also write <name>_transmission.png (models that estimate one, and dcp)")
    p.add_argument("--tile", type=int, default=1024, metavar="T",
                   help="dehaze images taller or wider than T pixels in overlapping T x T tiles, blended (memory "
                        "bounded by T; default 1024; 0: never tile)")
    p.add_argument("--overlap", type=int, default=128, metavar="O",
                   help="overlap of neighbouring tiles in pixels (default 128)")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="refuse images above N pixels, read from the file's header before decoding (default: "
                        "$TFDEHAZE_MAX_PIXELS, else 178956970, Pillow's limit)")
    p.add_argument("--precision", choices=("auto",) + POLICIES, default="auto",
                   help="dtype policy a model runs under (default auto: mixed_bfloat16 on CPUs with bfloat16 units "
                        "and GPUs of compute capability >= 8, mixed_float16 on 7.x, else float32; dcp: float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.list_models:
        quiet_tensorflow()
        from tfdehaze.models import registry

        print(registry.listing())
        return 0
    if not args.inputs or not args.out:
        p.error("the following arguments are required: INPUT, --out")

    def job():
        import os

        from tfdehaze.data.io import MAX_PIXELS_ENV
        from tfdehaze.inference import dehaze_files

        if args.max_pixels is not None:
            if args.max_pixels < 1:
                raise ValueError(f"--max-pixels must be at least 1, got {args.max_pixels}")
            os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)   # every reader of this process
        policy = None
        if args.model:
            from tfdehaze import precision

            policy, why = precision.resolve(args.precision)
            if not args.quiet:
                print(f"precision: {policy} ({why})")
        written = dehaze_files(args.inputs, args.out, method=args.method, model=args.model,
                               save_transmission=args.save_transmission, progress=not args.quiet,
                               tile=args.tile or None, overlap=args.overlap, precision=policy)
        print(f"wrote {len(written)} file(s) to {args.out}")

    return run_cli(PROG, job, tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())
