"""``tfdehaze-eval MODEL... (--manifest CSV | --data HAZY CLEAR) [--image-size S | --full-resolution]
[--tile T --overlap O] --out DIR``: argument parsing only; the work is `tfdehaze.evaluation.evaluate_methods`."""
from __future__ import annotations

import argparse
import sys

from tfdehaze.cli import Parser, run_cli

PROG = "tfdehaze-eval"


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``tfdehaze-eval``.

    Examples:
        >>> args = parser().parse_args(["dcp", "minet-official", "--data", "hazy", "clear", "--out", "eval"])
        >>> args.models, args.data, args.image_size, args.tile
        (['dcp', 'minet-official'], [['hazy', 'clear']], None, None)
    """
    p = Parser(
        prog=PROG,
        description="Score dehazing methods on hazy/clear pairs: per_image.csv (PSNR, SSIM, seconds), summary.csv "
                    "and summary.md (mean ± std per dataset and method, rows = methods) and grid.png in --out. "
                    "Rerunning skips the images already scored.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="dcp, a registered name with released weights (minet-official), a .keras file, a training "
                        "run directory (config.json + model.keras / checkpoints) or a SavedModel directory")
    p.add_argument("--manifest", action="append", default=[], metavar="CSV",
                   help="a manifest CSV (columns hazy, clear[, dataset]); repeat for several datasets")
    p.add_argument("--data", action="append", nargs=2, default=[], metavar=("HAZY", "CLEAR"),
                   help="a hazy folder and its clear folder (RESIDE, I-/O-HAZE, Dense-HAZE, NH-HAZE naming); "
                        "repeat for several datasets")
    p.add_argument("--layout", default="auto", help="naming rule of --data folders (default: auto)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--image-size", type=int, metavar="S",
                      help="resize both images to S x S before dehazing (quick checks; papers score full size)")
    size.add_argument("--full-resolution", action="store_true", help="score at full resolution (the default)")
    p.add_argument("--tile", type=int, metavar="T",
                   help="dehaze images larger than T pixels in overlapping tiles (default: whole images)")
    p.add_argument("--overlap", type=int, default=128, metavar="O", help="tile overlap in pixels (default 128)")
    p.add_argument("--grid-images", type=int, default=4, metavar="K",
                   help="images of the first dataset shown in grid.png (default 4; 0: no grid)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="refuse images above N pixels, read from each file's header before decoding (default: "
                        "$TFDEHAZE_MAX_PIXELS, else 178956970, Pillow's limit)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tfdehaze-eval``: errors are one ``tfdehaze-eval: error: ...`` line, exit code 2.

    Examples:
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     try:
        ...         main(["dcp", "--out", "eval"])
        ...     except SystemExit as stop:
        ...         print("exit code", stop.code)
        exit code 2
        >>> err.getvalue()
        'tfdehaze-eval: error: give --manifest CSV or --data HAZY CLEAR\\n'
    """
    p = parser()
    args = p.parse_args(argv)
    if not args.manifest and not args.data:
        p.error("give --manifest CSV or --data HAZY CLEAR")
    for flag, value, low in (("--image-size", args.image_size, 11), ("--tile", args.tile, 1),
                             ("--overlap", args.overlap, 0), ("--grid-images", args.grid_images, 0)):
        if value is not None and value < low:
            p.error(f"{flag} must be >= {low}, got {value}")

    def job():
        import os

        from tfdehaze.data.datasets import LAYOUTS
        from tfdehaze.data.io import MAX_PIXELS_ENV
        from tfdehaze.evaluation import evaluate_methods, load_datasets

        if args.max_pixels is not None:
            if args.max_pixels < 1:
                raise ValueError(f"--max-pixels must be at least 1, got {args.max_pixels}")
            os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)   # every reader of this process

        if args.layout not in LAYOUTS:
            raise ValueError(f"unknown --layout {args.layout!r}; choose one of {', '.join(LAYOUTS)}")
        try:
            data = load_datasets(args.manifest, [tuple(d) for d in args.data], layout=args.layout)
        except ValueError as err:   # one line on the console: the files, then the layouts expected
            raise ValueError("; ".join(line.strip() for line in str(err).splitlines() if line.strip())) from None
        result = evaluate_methods(args.models, data, args.out, image_size=args.image_size, tile=args.tile,
                                  overlap=args.overlap, grid_images=args.grid_images, progress=not args.quiet)
        print(f"scored {result['scored']} image(s), skipped {result['skipped']} already scored; "
              f"wrote {result['summary_md']}")
        print(result["summary_md"].read_text(), end="")

    return run_cli(PROG, job, tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())
