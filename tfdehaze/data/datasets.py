"""Benchmark folder layouts -> manifests (pandas DataFrames / CSV files of hazy, clear[, transmission] paths).

Naming rules (`layout=`), from the hazy file's stem (the name without extension; the partner's extension may differ,
and the lookup ignores case):

========================  ============================  ====================  ===================
layout                    hazy                          clear                 transmission
========================  ============================  ====================  ===================
``"its"``                 ``NNNN_k_beta.png``           ``NNNN.png``          ``NNNN_k.png``
``"sots-indoor"``         ``NNNN_k.png``                ``NNNN.png``          same stem as hazy
``"sots-outdoor"``,       ``NNNN_A_beta.jpg``           ``NNNN.png``          same stem as hazy
``"ots"``
``"ihaze"``, ``"ohaze"``  ``NN_indoor_hazy.jpg``        ``NN_indoor_GT.jpg``  same stem as hazy
``"dense-haze"``,         ``NN_hazy.png``               ``NN_GT.png``         same stem as hazy
``"nh-haze"``
``"rice"``, ``"same"``    any                           same stem             same stem
``"auto"``                tries, per file: same stem, ``*_hazy`` -> ``*_GT``, ``ID_*`` -> ``ID``
                          (transmission: same stem, then ITS ``NNNN_k``, then the clear stem)
========================  ============================  ====================  ===================

Examples:
    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("01_outdoor_hazy.jpg", "02_outdoor_hazy.jpg"):
    ...     _ = io.write_image(root / "hazy" / name, np.full((4, 4), 0.8))
    >>> for name in ("01_outdoor_GT.jpg", "02_outdoor_GT.jpg"):
    ...     _ = io.write_image(root / "clear" / name, np.full((4, 4), 0.2))
    >>> df = validate(pair_folders(root / "hazy", root / "clear", layout="ohaze"))
    >>> csv = write_manifest(df, root / "manifest.csv")
    >>> read_manifest(csv)[["height", "width"]].to_numpy().tolist()
    [[4, 4], [4, 4]]
"""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import re
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import PIL.Image

from tfdehaze.data import io
from tfdehaze.paths import atomic_write

PATH_COLUMNS = ("hazy", "clear", "transmission")

# layout -> (hazy stem pattern, clear stem template, transmission stem template)
_RESIDE = (r"(?P<id>\d+)_(?P<a>\d*\.?\d+)_(?P<beta>\d*\.?\d+)", "{id}", "{stem}")
_LAYOUTS = {
    "its": (r"(?P<id>\d+)_(?P<k>\d+)_(?P<beta>\d*\.?\d+)", "{id}", "{id}_{k}"),
    "sots-indoor": (r"(?P<id>\d+)_(?P<k>\d+)", "{id}", "{stem}"),
    "sots-outdoor": _RESIDE,
    "ots": _RESIDE,
    "ihaze": (r"(?P<id>.+)_hazy", "{id}_GT", "{stem}"),
    "ohaze": (r"(?P<id>.+)_hazy", "{id}_GT", "{stem}"),
    "dense-haze": (r"(?P<id>\d+)_hazy", "{id}_GT", "{stem}"),
    "nh-haze": (r"(?P<id>\d+)_hazy", "{id}_GT", "{stem}"),
    "rice": (r"(?P<id>.+)", "{id}", "{stem}"),
    "same": (r"(?P<id>.+)", "{id}", "{stem}"),
}
_AUTO = ((r"(?P<id>.+)", "{id}"), (r"(?P<id>.+)_hazy", "{id}_GT"), (r"(?P<id>[^_]+)_.+", "{id}"))
LAYOUTS = ("auto",) + tuple(_LAYOUTS)
# layout -> "hazy name <-> clear name", for error messages that say what was expected
LAYOUT_NAMES = {
    "its": "NNNN_k_beta.png <-> NNNN.png",
    "sots-indoor": "NNNN_k.png <-> NNNN.png",
    "sots-outdoor": "NNNN_A_beta.jpg <-> NNNN.png (a larger clear image is centre-cropped)",
    "ots": "NNNN_A_beta.jpg <-> NNNN.jpg",
    "ihaze": "NN_indoor_hazy.jpg <-> NN_indoor_GT.jpg",
    "ohaze": "NN_outdoor_hazy.jpg <-> NN_outdoor_GT.jpg",
    "dense-haze": "NN_hazy.png <-> NN_GT.png",
    "nh-haze": "NN_hazy.png <-> NN_GT.png",
    "rice": "same name in both folders",
    "same": "same name in both folders",
}


def expected_layouts(layout: str = "auto") -> str:
    """One line naming the folder layout(s) `pair_folders` expects for ``layout`` (all of them for ``"auto"``).

    Examples:
        >>> print(expected_layouts("nh-haze"))
        expected layout 'nh-haze': hazy/NN_hazy.png <-> clear/NN_GT.png
        >>> expected_layouts().count(";") + 1 == len(LAYOUT_NAMES)
        True
    """
    chosen = LAYOUT_NAMES if layout == "auto" else {layout: LAYOUT_NAMES[layout]}
    parts = []
    for name, rule in chosen.items():
        hazy, _, clear = rule.partition(" <-> ")
        parts.append(f"{name!r}: hazy/{hazy} <-> clear/{clear}" if clear else f"{name!r}: {rule}")
    head = "expected layout" if layout != "auto" else "expected one of the layouts"
    return f"{head} " + "; ".join(parts)


def _index(folder):
    """lower-case stem -> list of image files in `folder` (ImageError naming the folder if missing or empty)."""
    index = {}
    for path in io.list_images(folder):
        index.setdefault(path.stem.lower(), []).append(path)
    return index


def _lookup(index, stem, folder, hazy):
    found = index.get(stem.lower(), [])
    if len(found) > 1:
        raise ValueError(f"ambiguous partner for {hazy}: {', '.join(map(str, found))} in {folder}")
    return found[0] if found else None


def _candidates(stem, layout):
    """[(clear stem, transmission stems)] to try for a hazy stem, or a reason string if the name breaks the rule."""
    if layout == "auto":
        out = []
        for pattern, clear in _AUTO:
            m = re.fullmatch(pattern, stem, flags=re.IGNORECASE)
            if m:
                k = re.fullmatch(_LAYOUTS["its"][0], stem)
                trans = [stem] + ([k.expand(r"\g<id>_\g<k>")] if k else []) + [clear.format(**m.groupdict())]
                out.append((clear.format(**m.groupdict()), trans))
        return out
    pattern, clear, trans = _LAYOUTS[layout]
    m = re.fullmatch(pattern, stem, flags=re.IGNORECASE)
    if not m:
        return f"name does not follow the {layout!r} layout (pattern {pattern})"
    return [(clear.format(**m.groupdict()), [trans.format(stem=stem, **m.groupdict())])]


def _abs(path):
    return os.path.abspath(os.fspath(path))


def pair_folders(hazy_dir: str | os.PathLike, clear_dir: str | os.PathLike, trans_dir: str | os.PathLike | None = None,
                 layout: str = "auto", strict: bool = True) -> pd.DataFrame:
    """Pair every hazy image with its clear (and transmission) image by the naming rules of `layout`.

    Returns a DataFrame with columns ``hazy, clear[, transmission]`` (absolute paths, str), one row per hazy file,
    sorted by hazy path. A hazy file without a partner raises a ValueError naming it (with ``strict=False`` such
    files are skipped with a warning listing them); a missing or empty folder raises naming the folder.

    Examples:
        >>> import tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("1_1_0.9.png", "1_2_0.8.png", "2_1_0.9.png"):       # RESIDE ITS: id_k_beta
        ...     _ = io.write_image(root / "hazy" / name, np.full((4, 4), 0.8))
        >>> for name in ("1.png", "2.png"):
        ...     _ = io.write_image(root / "clear" / name, np.full((4, 4), 0.2))
        >>> df = pair_folders(root / "hazy", root / "clear", layout="its")
        >>> [(pathlib.Path(h).name, pathlib.Path(c).name) for h, c in zip(df["hazy"], df["clear"])]
        [('1_1_0.9.png', '1.png'), ('1_2_0.8.png', '1.png'), ('2_1_0.9.png', '2.png')]
        >>> _ = io.write_image(root / "hazy" / "3_1_0.9.png", np.zeros((4, 4)))
        >>> pair_folders(root / "hazy", root / "clear", layout="its")
        Traceback (most recent call last):
        ...
        ValueError: 1 hazy file(s) without a partner (layout 'its'):
          .../3_1_0.9.png: no clear image (3.*) in .../clear
        expected layout 'its': hazy/NNNN_k_beta.png <-> clear/NNNN.png
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    hazy_files = io.list_images(hazy_dir)
    clear_index = _index(clear_dir)
    trans_index = _index(trans_dir) if trans_dir is not None else None
    rows, unpaired = [], []
    for hazy in hazy_files:
        candidates = _candidates(hazy.stem, layout)
        if isinstance(candidates, str):
            unpaired.append(f"{hazy}: {candidates}")
            continue
        clear = trans_stems = None
        for clear_stem, stems in candidates:
            clear = _lookup(clear_index, clear_stem, clear_dir, hazy)
            if clear is not None:
                trans_stems = stems
                break
        if clear is None:
            tried = ", ".join(f"{c}.*" for c, _ in candidates)
            unpaired.append(f"{hazy}: no clear image ({tried}) in {clear_dir}")
            continue
        row = {"hazy": _abs(hazy), "clear": _abs(clear)}
        if trans_index is not None:
            trans = next(filter(None, (_lookup(trans_index, t, trans_dir, hazy) for t in trans_stems)), None)
            if trans is None:
                tried = ", ".join(f"{t}.*" for t in trans_stems)
                unpaired.append(f"{hazy}: no transmission map ({tried}) in {trans_dir}")
                continue
            row["transmission"] = _abs(trans)
        rows.append(row)
    if unpaired and (strict or not rows):
        raise ValueError(f"{len(unpaired)} hazy file(s) without a partner (layout {layout!r}):\n  "
                         + "\n  ".join(unpaired) + f"\n{expected_layouts(layout)}")
    if unpaired:
        warnings.warn(f"skipped {len(unpaired)} hazy file(s) without a partner:\n  " + "\n  ".join(unpaired),
                      stacklevel=2)
    return pd.DataFrame(rows, columns=["hazy", "clear"] + (["transmission"] if trans_dir is not None else []))


def read_manifest(csv: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest CSV (columns ``hazy, clear[, transmission]``, plus any others) as a DataFrame.

    Relative paths are resolved against the CSV's folder; missing columns or empty path cells raise a ValueError.

    Examples:
        >>> import tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp()).resolve()
        >>> _ = (root / "manifest.csv").write_text("hazy,clear,beta\\nhazy/a.png,clear/a.png,0.8\\n")
        >>> df = read_manifest(root / "manifest.csv")
        >>> pathlib.Path(df["hazy"][0]).relative_to(root).as_posix(), float(df["beta"][0])
        ('hazy/a.png', 0.8)
        >>> _ = (root / "bad.csv").write_text("hazy,target\\na.png,b.png\\n")
        >>> read_manifest(root / "bad.csv")
        Traceback (most recent call last):
        ...
        ValueError: .../bad.csv: missing column(s) clear (has hazy, target)
    """
    csv = pathlib.Path(csv)
    try:
        df = pd.read_csv(csv, dtype={c: str for c in PATH_COLUMNS})
    except FileNotFoundError:
        raise ValueError(f"{csv}: no such manifest file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{csv}: not a readable CSV manifest ({e})") from None
    missing = [c for c in ("hazy", "clear") if c not in df.columns]
    if missing:
        raise ValueError(f"{csv}: missing column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})")
    if df.empty:
        raise ValueError(f"{csv}: manifest has no rows")
    base = csv.resolve().parent
    for column in (c for c in PATH_COLUMNS if c in df.columns):
        empty = df.index[df[column].isna()].tolist()
        if empty:
            raise ValueError(f"{csv}: empty {column!r} path in row(s) {', '.join(str(i + 2) for i in empty)}")
        df[column] = [_abs(base / p) for p in df[column]]
    return df


def write_manifest(df: pd.DataFrame, csv: str | os.PathLike) -> pathlib.Path:
    """Write `df` to `csv` atomically; paths below the CSV's folder are written relative to it (portable).

    Parent folders are created; returns the CSV's path. `read_manifest` turns the relative paths back into absolute
    ones.

    Examples:
        >>> import tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> df = pd.DataFrame({"hazy": [str(root / "hazy" / "a.png")], "clear": [str(root / "clear" / "a.png")]})
        >>> csv = write_manifest(df, root / "manifest.csv")
        >>> print(csv.read_text(), end="")
        hazy,clear
        hazy/a.png,clear/a.png
        >>> read_manifest(csv)["clear"][0] == os.path.abspath(root / "clear" / "a.png")
        True
    """
    csv = pathlib.Path(csv)
    missing = [c for c in ("hazy", "clear") if c not in df.columns]
    if missing:
        raise ValueError(f"manifest for {csv} lacks column(s) {', '.join(missing)}")
    base = _abs(csv.parent)
    out = df.copy()
    for column in (c for c in PATH_COLUMNS if c in out.columns):
        paths = [_abs(p) for p in out[column]]
        out[column] = [pathlib.Path(os.path.relpath(p, base)).as_posix()
                       if os.path.commonpath([p, base]) == base else p for p in paths]
    csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(csv, out.to_csv(index=False, lineterminator="\n"))
    return csv


def _size(path, decode):
    """(height, width) of an image file; full decode, or with ``decode=False`` header + PNG chunk CRCs only.

    Either way the header's size is checked against the pixel limit (`io.check_image_size`) before decoding."""
    if decode:
        return io.read_image(path).shape[:2]
    size = io.check_image_size(path, require_format=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path) as im:
                im.verify()
        return size
    except PIL.Image.DecompressionBombError:
        return size  # above Pillow's own limit, within tfdehaze's (checked above): the header has been read
    except FileNotFoundError:
        raise io.ImageError(f"{path}: no such file") from None
    except PIL.UnidentifiedImageError:
        raise io.ImageError(f"{path}: not an image file (format not recognised)") from None
    except Exception as e:
        raise io.ImageError(f"{path}: corrupt or truncated image ({e})") from None


def image_sizes(paths: Iterable[str | os.PathLike], decode: bool = True,
                workers: int | None = None) -> dict[str, tuple[int, int] | io.ImageError]:
    """{path: (height, width) or ImageError} for each distinct path, read in a thread pool (each file once).

    ``decode=False`` reads only the header (and checks PNG chunk CRCs): much faster, misses some damage.

    Examples:
        >>> import tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> good = io.write_image(root / "good.png", np.zeros((4, 6)))
        >>> _ = (root / "bad.png").write_bytes(b"not an image")
        >>> for path, size in image_sizes([good, root / "bad.png", good]).items():
        ...     print(pathlib.Path(path).name, size)
        good.png (4, 6)
        bad.png .../bad.png: not an image file (format not recognised)
    """
    def one(path):
        try:
            return _size(path, decode)
        except io.ImageError as e:
            return e

    paths = list(dict.fromkeys(map(str, paths)))
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        return dict(zip(paths, pool.map(one, paths)))


def validate(df: pd.DataFrame, decode: bool = True, allow_larger_clear: bool = True,
             workers: int | None = None) -> pd.DataFrame:
    """Open each file of the manifest once and raise one ValueError listing every bad file and mismatched pair.

    Checks that every file decodes (``decode=False``: header and PNG CRCs only, much faster, misses some damage),
    that transmission maps have the hazy image's size and that clear images have it too, or are larger in both
    dimensions when `allow_larger_clear` (RESIDE SOTS-outdoor ground truths; the pipeline centre-crops them).
    Returns a copy of `df` with the hazy images' ``height`` and ``width`` columns added.

    Examples:
        >>> import tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name, clear_size in (("a.png", (6, 6)), ("b.png", (3, 4))):
        ...     _ = io.write_image(root / "hazy" / name, np.full((4, 4), 0.8))
        ...     _ = io.write_image(root / "clear" / name, np.zeros(clear_size))
        >>> df = pair_folders(root / "hazy", root / "clear")
        >>> validate(df.iloc[:1])[["height", "width"]].to_numpy().tolist()    # a larger clear image is fine
        [[4, 4]]
        >>> validate(df)
        Traceback (most recent call last):
        ...
        ValueError: 1 problem(s) in the dataset:
          size mismatch: hazy .../b.png is 4x4 but clear .../b.png is 3x4 (height x width)
    """
    missing = [c for c in ("hazy", "clear") if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise ValueError("manifest has no rows")
    columns = [c for c in PATH_COLUMNS if c in df.columns]
    sizes = image_sizes(np.concatenate([df[c].to_numpy(str) for c in columns]), decode, workers)
    problems = [str(e) for e in sizes.values() if isinstance(e, Exception)]
    for row in df.itertuples(index=False):
        hazy = sizes[str(row.hazy)]
        if isinstance(hazy, Exception):
            continue
        for column in columns[1:]:
            other = sizes[str(getattr(row, column))]
            if isinstance(other, Exception) or other == hazy:
                continue
            if column == "clear" and allow_larger_clear and other[0] >= hazy[0] and other[1] >= hazy[1]:
                continue
            problems.append(f"size mismatch: hazy {row.hazy} is {hazy[0]}x{hazy[1]} but {column} "
                            f"{getattr(row, column)} is {other[0]}x{other[1]} (height x width)")
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in the dataset:\n  " + "\n  ".join(problems))
    out = df.copy()
    out["height"], out["width"] = zip(*(sizes[str(p)] for p in df["hazy"]))
    return out


def split_pairs(df: pd.DataFrame, split: Sequence[float] | str = (0.8, 0.1, 0.1),
                seed: int = 0) -> dict[str, pd.DataFrame]:
    """Split a manifest into ``{"train", "val", "test"}`` (or ``{"train", "test"}`` for two fractions).

    `split` is a tuple of fractions summing to 1: clear images are shuffled with `seed` and all hazy versions of
    one clear image go to the same split (no scene leaks between splits, which matters for RESIDE's ten hazy
    images per scene). ``split="ntire"`` is the NTIRE 2018 I-HAZE / O-HAZE split in file order: the last 5 scenes
    are test, the 5 before them validation, the rest training (O-HAZE 35/5/5, I-HAZE 25/5/5).

    Examples:
        >>> df = pd.DataFrame({"hazy": [f"hazy/{i:02d}_{k}.png" for i in range(20) for k in (1, 2)],
        ...                    "clear": [f"clear/{i:02d}.png" for i in range(20) for k in (1, 2)]})
        >>> parts = split_pairs(df, (0.8, 0.1, 0.1), seed=0)
        >>> {name: len(part) for name, part in parts.items()}       # two hazy images per scene
        {'train': 32, 'val': 4, 'test': 4}
        >>> set(parts["train"]["clear"]) & set(parts["test"]["clear"])    # no scene in two splits
        set()
        >>> sorted(set(split_pairs(df, "ntire")["test"]["clear"]))
        ['clear/15.png', 'clear/16.png', 'clear/17.png', 'clear/18.png', 'clear/19.png']
    """
    scenes = list(dict.fromkeys(df.sort_values("hazy")["clear"]))
    if isinstance(split, str):
        if split != "ntire":
            raise ValueError(f"unknown split {split!r}; use 'ntire' or fractions like (0.8, 0.1, 0.1)")
        if len(scenes) <= 10:
            raise ValueError(f"the NTIRE split needs more than 10 scenes, the manifest has {len(scenes)}")
        groups = {"train": scenes[:-10], "val": scenes[-10:-5], "test": scenes[-5:]}
    else:
        fractions = np.asarray(split, float)
        if len(fractions) not in (2, 3) or (fractions < 0).any() or abs(fractions.sum() - 1) > 1e-6:
            raise ValueError(f"split fractions must be 2 or 3 non-negative numbers summing to 1, got {split}")
        order = np.random.default_rng(seed).permutation(len(scenes))
        bounds = np.round(np.cumsum(fractions) * len(scenes)).astype(int)
        names = ("train", "test") if len(fractions) == 2 else ("train", "val", "test")
        chunks = np.split(order, bounds[:-1])
        groups = {name: [scenes[i] for i in sorted(chunk)] for name, chunk in zip(names, chunks)}
    return {name: df[df["clear"].isin(set(members))].reset_index(drop=True) for name, members in groups.items()}
