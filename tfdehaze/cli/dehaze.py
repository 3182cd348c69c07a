"""``tfdehaze-dehaze INPUT... --out DIR [--method dcp | --model NAME_OR_PATH] [--save-transmission]``."""
from __future__ import annotations

import argparse
import sys

from tfdehaze.cli import Parser, run_cli

PROG = "tfdehaze-dehaze"


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Dehaze image files or folders of images; writes <name>.png into --out "
                    "(inputs are never overwritten).")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.list_models:
        from tfdehaze.models import registry

        print(registry.listing())
        return 0
    if not args.inputs or not args.out:
        p.error("the following arguments are required: INPUT, --out")

    def job():
        from tfdehaze.inference import dehaze_files

        written = dehaze_files(args.inputs, args.out, method=args.method, model=args.model,
                               save_transmission=args.save_transmission, progress=not args.quiet,
                               tile=args.tile or None, overlap=args.overlap)
        print(f"wrote {len(written)} file(s) to {args.out}")

    return run_cli(PROG, job)


if __name__ == "__main__":
    sys.exit(main())
