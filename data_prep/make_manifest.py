"""Pair a benchmark's hazy and clear folders into manifest CSV(s) for tfdehaze (paths relative to the CSV).

Examples (layouts and folder names in data_prep/README.md):

    python data_prep/make_manifest.py --hazy ITS/hazy --clear ITS/clear --trans ITS/trans --layout its \
        --split 0.9,0.1 --out manifests/its.csv            # -> its_train.csv, its_test.csv
    python data_prep/make_manifest.py --hazy O-HAZE/hazy --clear O-HAZE/GT --layout ohaze \
        --split ntire --out manifests/ohaze.csv            # -> ohaze_train/val/test.csv (35/5/5)

Every file is decoded once before the CSV is written (`--header-only` for a quicker header/CRC check, `--no-validate`
to skip); unpaired, corrupt or mismatched files are listed and nothing is written.
"""
import argparse
import os
import pathlib
import sys

import pandas as pd

from tfdehaze.cli import run_cli
from tfdehaze.data import datasets, io


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hazy", nargs="+", required=True, metavar="DIR",
                        help="hazy image folder(s), e.g. the four OTS part folders")
    parser.add_argument("--clear", required=True, metavar="DIR", help="clear (ground-truth) image folder")
    parser.add_argument("--trans", metavar="DIR", help="transmission map folder (RESIDE ITS trans/)")
    parser.add_argument("--layout", default="auto", choices=datasets.LAYOUTS, help="naming rule (default: auto)")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="manifest CSV to write")
    parser.add_argument("--split", help="'ntire' (I-HAZE/O-HAZE: last 5 scenes test, 5 before val) or fractions "
                                        "like 0.8,0.1,0.1 (train,val,test) or 0.9,0.1 (train,test), split by scene")
    parser.add_argument("--seed", type=int, default=0, help="seed of a fractional split (default 0)")
    parser.add_argument("--skip-unpaired", action="store_true", help="warn about hazy files without a partner "
                                                                     "instead of failing")
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--header-only", action="store_true", help="check headers / PNG CRCs instead of decoding")
    check.add_argument("--no-validate", action="store_true", help="write without checking the files")
    parser.add_argument("--max-pixels", type=int, metavar="N",
                        help="refuse images above N pixels, read from the header before decoding (default: "
                             "$TFDEHAZE_MAX_PIXELS, else 178956970)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def job():
        if args.max_pixels is not None:
            if args.max_pixels < 1:
                raise ValueError(f"--max-pixels must be at least 1, got {args.max_pixels}")
            os.environ[io.MAX_PIXELS_ENV] = str(args.max_pixels)
        df = pd.concat([datasets.pair_folders(h, args.clear, args.trans, layout=args.layout,
                                              strict=not args.skip_unpaired) for h in args.hazy],
                       ignore_index=True)
        if not args.no_validate:
            datasets.validate(df, decode=not args.header_only)
        split = args.split
        if split is not None and split != "ntire":
            split = tuple(float(f) for f in split.split(","))
        parts = {None: df} if split is None else datasets.split_pairs(df, split, seed=args.seed)
        for name, part in parts.items():      # written only once every check has passed
            out = args.out if name is None else args.out.with_name(f"{args.out.stem}_{name}{args.out.suffix}")
            datasets.write_manifest(part, out)
            print(f"{out}: {len(part)} pairs, {part['clear'].nunique()} scenes")

    return run_cli("make_manifest.py", job)


if __name__ == "__main__":
    sys.exit(main())
