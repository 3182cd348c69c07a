"""Synthesize a hazy training set from clear images (and optional depth maps), RESIDE-style.

    python data_prep/synthesize_haze.py CLEAR_DIR OUT_DIR [--depth DEPTH_DIR] [--depth-scale S] [--seed 0]

Writes OUT_DIR/hazy, OUT_DIR/clear, OUT_DIR/transmission (8-bit PNGs named after the clear images) and
OUT_DIR/manifest.csv (hazy, clear, transmission, airlight_r/g/b, beta). Haze: I = J t + A (1 - t), t = exp(-beta d),
A and beta drawn per image from --airlight and --beta (default RESIDE's [0.7, 1.0] and [0.6, 1.8]) with --seed.
Depth maps are matched by file stem (.npy, or an image whose first channel holds the raw depth, e.g. a 16-bit PNG)
and must have the clear image's size; each is divided by its maximum unless --depth-scale gives a fixed factor
(e.g. 0.1 for metres when beta should see 10 m as d = 1). Without --depth, a synthetic depth (far at the top,
smooth random variation) is used. The same function builds tfdehaze's bundled sample set.
"""
import argparse
import os
import pathlib
import sys

import numpy as np

from tfdehaze.cli import run_cli
from tfdehaze.data import io, sample


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clear_dir", type=pathlib.Path, help="folder of clear images")
    parser.add_argument("out_dir", type=pathlib.Path, help="output folder")
    parser.add_argument("--depth", type=pathlib.Path, metavar="DIR", help="depth maps, same stems as the images")
    parser.add_argument("--depth-scale", type=float, help="multiply depth by this instead of dividing by its max")
    parser.add_argument("--airlight", type=float, nargs=2, default=sample.AIRLIGHT_RANGE, metavar=("LO", "HI"))
    parser.add_argument("--beta", type=float, nargs=2, default=sample.BETA_RANGE, metavar=("LO", "HI"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pixels", type=int, metavar="N",
                        help="refuse images above N pixels, read from the header before decoding (default: "
                             "$TFDEHAZE_MAX_PIXELS, else 178956970)")
    return parser.parse_args(argv)


def read_depth(folder, stem, scale):
    """The depth map `folder/stem.*` (.npy or image, first channel, raw values), scaled or divided by its max."""
    found = [p for p in folder.glob(f"{stem}.*") if p.suffix.lower() in (".npy",) + io.IMAGE_EXTENSIONS]
    if len(found) != 1:
        raise ValueError(f"{folder}: expected one depth map named {stem}.npy / {stem}.png..., found {len(found)}")
    path = found[0]
    depth = np.load(path) if path.suffix.lower() == ".npy" else io.decode(path)
    depth = np.asarray(depth, np.float64)
    depth = depth[..., 0] if depth.ndim == 3 else depth
    if depth.ndim != 2 or not np.isfinite(depth).all() or (depth < 0).any() or depth.max() <= 0:
        raise ValueError(f"{path}: depth must be a 2-D map of finite non-negative values, not all zero")
    return depth * scale if scale is not None else depth / depth.max()


def items(args):
    files = io.list_images(args.clear_dir)
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{args.clear_dir}: several images share a name (stem): "
                         f"{sorted({s for s in stems if stems.count(s) > 1})}")
    for path in files:
        clear = io.read_image(path)
        depth = read_depth(args.depth, path.stem, args.depth_scale) if args.depth else None
        if depth is not None and depth.shape != clear.shape[:2]:
            raise ValueError(f"{path}: depth map is {depth.shape} but the image is {clear.shape[:2]}")
        yield path.stem, clear, depth


def main(argv=None):
    args = parse_args(argv)

    def job():
        if args.max_pixels is not None:
            if args.max_pixels < 1:
                raise ValueError(f"--max-pixels must be at least 1, got {args.max_pixels}")
            os.environ[io.MAX_PIXELS_ENV] = str(args.max_pixels)
        df = sample.synthesize_set(args.out_dir, items(args), seed=args.seed,
                                   airlight_range=tuple(args.airlight), beta_range=tuple(args.beta))
        print(f"{args.out_dir / 'manifest.csv'}: {len(df)} hazy/clear/transmission triples")

    return run_cli("synthesize_haze.py", job)


if __name__ == "__main__":
    sys.exit(main())
