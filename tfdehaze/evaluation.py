"""Score dehazing methods on benchmark pairs: per-image PSNR / SSIM / seconds, a paper-style summary and a grid.

The logic behind ``tfdehaze-eval``. `evaluate_methods` runs every method on every pair of every dataset and keeps

- ``per_image.csv``: one row per (dataset, method, image, image_size) with ``psnr, ssim`` (dehazed vs clear),
  ``hazy_psnr, hazy_ssim`` (the hazy input vs clear) and ``seconds`` (the dehazing call alone). It is rewritten
  atomically (`tfdehaze.paths.atomic_write`) after every image, so a killed run loses at most the image in progress,
  and a rerun skips every (dataset, method, image, image_size) already in it.
- ``summary.csv`` / ``summary.md``: mean and std (pandas, ddof=1) per dataset and method, laid out like Table I of
  Guided-Pix2Pix (rows: methods, columns: dataset x {PSNR, SSIM}), plus a ``hazy input`` row (no dehazing).
- ``grid.png``: hazy | each method | clear for the first few images of the first dataset (matplotlib, Agg).

Scores use `tfdehaze.metrics.psnr` / `tfdehaze.metrics.ssim` (Wang et al.'s Gaussian SSIM, see docs/EVALUATION.md)
on outputs clipped to [0, 1], after `tfdehaze.check.center_crop_to` aligns a larger ground truth (SOTS-outdoor)
with its hazy image, as the training pipeline does.
"""
from __future__ import annotations

import importlib.util
import io as _io
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from tfdehaze import metrics
from tfdehaze.data import datasets
from tfdehaze.data import io as image_io
from tfdehaze.paths import atomic_write

COLUMNS = ("dataset", "method", "image", "hazy", "clear", "image_size", "psnr", "ssim", "hazy_psnr", "hazy_ssim",
           "seconds")
KEY = ("dataset", "method", "hazy", "image_size")
HAZY_ROW = "hazy input"
_GENERIC_FOLDERS = {"hazy", "haze", "input", "inputs", "hazy_images"}


# ------------------------------------------------------------------------------------------------ methods
def method_name(spec: str | os.PathLike) -> str:
    """The name a method gets in the tables: a registered name or ``dcp`` as given, a file's stem, a folder's name.

    Examples:
        >>> method_name("minet-official"), method_name("runs/gp2p/model.keras"), method_name("runs/gp2p/")
        ('minet-official', 'gp2p', 'gp2p')
        >>> method_name("exports/rfd.keras")
        'rfd'
    """
    path = pathlib.Path(spec)
    if path.name == "model.keras":
        return path.parent.name
    if path.suffix == ".keras":
        return path.stem
    return path.name or str(spec)


def _saved_model_dehazer(path: pathlib.Path) -> Callable[[tf.Tensor], dict]:
    """A SavedModel's float signature as a dehazer (needs `tfdehaze.export`, the exporter of this package)."""
    if importlib.util.find_spec("tfdehaze.export") is None:
        raise ValueError(f"{path} is a SavedModel directory, but this version of tfdehaze has no tfdehaze.export "
                         "(SavedModel support): evaluate the .keras file or the run directory instead")
    loaded = tf.saved_model.load(str(path))
    for name, signature in loaded.signatures.items():
        inputs = signature.structured_input_signature[1]
        if len(inputs) == 1:
            (arg, spec), = inputs.items()
            if spec.dtype == tf.float32 and spec.shape.rank == 4:
                def run(batch, signature=signature, arg=arg):
                    out = signature(**{arg: tf.convert_to_tensor(batch, tf.float32)})
                    return out if "dehazed" in out else {"dehazed": next(iter(out.values()))}
                run.signature_name = name
                return run
    raise ValueError(f"{path}: no SavedModel signature takes one float32 (N, H, W, 3) image batch "
                     f"(signatures: {', '.join(loaded.signatures) or 'none'})")


def load_method(spec: str | os.PathLike, tile: int | None = None,
                overlap: int | None = None) -> Callable[[tf.Tensor], dict]:
    """A dehazer ``(1, H, W, 3) -> {"dehazed": ...}`` for ``dcp``, a registered name (``minet-official``), a
    ``.keras`` file, a training run directory or a SavedModel directory (when `tfdehaze.export` exists).

    ``tile`` (optional) dehazes larger images in tiles (`tfdehaze.inference.make_dehazer`).

    Examples:
        >>> fn = load_method("dcp")
        >>> sorted(fn(tf.fill([1, 16, 16, 3], 0.5)))
        ['airlight', 'dehazed', 'transmission']
        >>> load_method("no-such-model")
        Traceback (most recent call last):
        ...
        ValueError: unknown model 'no-such-model'...
    """
    from tfdehaze import inference

    kwargs = {} if overlap is None else {"overlap": overlap}
    if str(spec) == "dcp":
        return inference.make_dehazer("dcp", tile=tile, **kwargs)
    path = pathlib.Path(spec)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _saved_model_dehazer(path)
    return inference.make_dehazer(model=spec, tile=tile, **kwargs)


# ----------------------------------------------------------------------------------------------- datasets
def dataset_name(hazy_dir: str | os.PathLike) -> str:
    """A dataset's name from its hazy folder: the folder's name, or its parent's when it is called ``hazy``.

    Examples:
        >>> dataset_name("SOTS/indoor/hazy"), dataset_name("O-HAZE/hazy/"), dataset_name("NH-HAZE-test")
        ('indoor', 'O-HAZE', 'NH-HAZE-test')
    """
    path = pathlib.Path(os.path.abspath(hazy_dir))
    return path.parent.name if path.name.lower() in _GENERIC_FOLDERS else path.name


def load_datasets(manifests: Sequence[str | os.PathLike] = (),
                  data: Sequence[tuple[str | os.PathLike, str | os.PathLike]] = (),
                  layout: str = "auto") -> list[tuple[str, pd.DataFrame]]:
    """``[(dataset name, pairs)]`` from manifest CSVs (named by a ``dataset`` column, else the file's stem) and
    (hazy folder, clear folder) pairs (`tfdehaze.data.datasets.pair_folders`, named by `dataset_name`).

    A folder whose files follow no known layout gets a ValueError naming the files and the layouts expected.

    Examples:
        >>> import tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("01_hazy.png", "02_hazy.png"):                 # Dense-HAZE / NH-HAZE naming
        ...     _ = image_io.write_image(root / "NH-HAZE" / "hazy" / name, np.zeros((4, 4, 3)))
        ...     _ = image_io.write_image(root / "NH-HAZE" / "GT" / name.replace("hazy", "GT"), np.ones((4, 4, 3)))
        >>> [(name, len(df)) for name, df in load_datasets(data=[(root / "NH-HAZE" / "hazy", root / "NH-HAZE" / "GT")])]
        [('NH-HAZE', 2)]
        >>> _ = image_io.write_image(root / "bad" / "photo.png", np.zeros((4, 4, 3)))
        >>> load_datasets(data=[(root / "bad", root / "NH-HAZE" / "GT")])
        Traceback (most recent call last):
        ...
        ValueError: 1 hazy file(s) without a partner (layout 'auto'):
          .../photo.png: no clear image (photo.*) in .../GT
        expected one of the layouts 'its': hazy/NNNN_k_beta.png <-> clear/NNNN.png; ...
    """
    found: list[tuple[str, pd.DataFrame]] = []
    for csv in manifests:
        df = datasets.read_manifest(csv)
        if "dataset" in df.columns:
            for name, part in df.groupby("dataset", sort=False):
                found.append((str(name), part.reset_index(drop=True)))
        else:
            found.append((pathlib.Path(csv).stem, df))
    for hazy_dir, clear_dir in data:
        try:
            df = datasets.pair_folders(hazy_dir, clear_dir, layout=layout)
        except image_io.ImageError as err:
            raise ValueError(f"{err}\n{datasets.expected_layouts(layout)}") from None
        found.append((dataset_name(hazy_dir), df))
    if not found:
        raise ValueError("no data: give --manifest CSV or --data HAZY_DIR CLEAR_DIR")
    names = [name for name, _ in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"two datasets are both called {', '.join(duplicates)}: give them distinct folder names "
                         "or a 'dataset' column in the manifest")
    return found


# ------------------------------------------------------------------------------------------------ results
def read_results(csv: str | os.PathLike) -> pd.DataFrame:
    """``per_image.csv`` as a DataFrame with `COLUMNS` (an empty one if the file does not exist).

    Examples:
        >>> import tempfile
        >>> read_results(pathlib.Path(tempfile.mkdtemp(), "per_image.csv")).columns.tolist() == list(COLUMNS)
        True
    """
    csv = pathlib.Path(csv)
    if not csv.is_file():
        return pd.DataFrame({c: pd.Series(dtype=float if c in metrics.METRICS + ("seconds",) else str)
                             for c in COLUMNS})
    df = pd.read_csv(csv, dtype={c: str for c in ("dataset", "method", "image", "hazy", "clear", "image_size")},
                     keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{csv}: not a per-image results file of tfdehaze-eval (missing {', '.join(missing)}); "
                         "choose another --out folder")
    return df


def _write_results(df: pd.DataFrame, csv: pathlib.Path) -> None:
    atomic_write(csv, df.to_csv(index=False, lineterminator="\n", float_format="%.6f"))


def summary_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Table I layout: one row per method (``hazy input`` first), per dataset the columns
    ``<dataset> PSNR mean / std``, ``<dataset> SSIM mean / std``, ``<dataset> n``, ``<dataset> s/image``.

    Means and standard deviations are pandas' (ddof=1) over the images of `per_image` (`tfdehaze.metrics.summarize`).

    Examples:
        >>> df = pd.DataFrame({"dataset": ["sots"] * 4, "method": ["dcp", "dcp", "minet", "minet"],
        ...                    "psnr": [20.0, 22.0, 30.0, 34.0], "ssim": [0.8, 0.9, 0.95, 0.97],
        ...                    "hazy_psnr": [12.0, 14.0, 12.0, 14.0], "hazy_ssim": [0.6, 0.7, 0.6, 0.7],
        ...                    "seconds": [0.1, 0.1, 2.0, 2.0]})
        >>> summary_table(df)[["method", "sots PSNR mean", "sots PSNR std", "sots n"]]
              method  sots PSNR mean  sots PSNR std  sots n
        0  hazy input            13.0       1.414214       2
        1        dcp            21.0       1.414214       2
        2      minet            32.0       2.828427       2
    """
    columns = ["method"]
    rows: dict[str, dict[str, Any]] = {HAZY_ROW: {"method": HAZY_ROW}}
    for dataset, part in per_image.groupby("dataset", sort=False):
        prefix = str(dataset)
        columns += [f"{prefix} {m} {s}" for m in ("PSNR", "SSIM") for s in ("mean", "std")]
        columns += [f"{prefix} n", f"{prefix} s/image"]
        stats = metrics.summarize(part)
        seconds = part.groupby("method", sort=False)["seconds"].mean()
        for row in stats.itertuples(index=False):
            entry = rows.setdefault(row.method, {"method": row.method})
            entry.update({f"{prefix} PSNR mean": row.psnr_mean, f"{prefix} PSNR std": row.psnr_std,
                          f"{prefix} SSIM mean": row.ssim_mean, f"{prefix} SSIM std": row.ssim_std,
                          f"{prefix} n": row.n, f"{prefix} s/image": seconds[row.method]})
        # the hazy input row: each image once (the hazy scores are the same for every method)
        first = part[part["method"] == part["method"].iloc[0]]
        hazy = rows[HAZY_ROW]
        hazy.update({f"{prefix} PSNR mean": first["hazy_psnr"].mean(), f"{prefix} PSNR std": first["hazy_psnr"].std(),
                     f"{prefix} SSIM mean": first["hazy_ssim"].mean(), f"{prefix} SSIM std": first["hazy_ssim"].std(),
                     f"{prefix} n": len(first), f"{prefix} s/image": 0.0})
    return pd.DataFrame(list(rows.values()), columns=columns)


def summary_markdown(table: pd.DataFrame) -> str:
    """`summary_table` as a Markdown table: ``PSNR (dB)`` and ``SSIM`` as "mean ± std" per dataset.

    Examples:
        >>> table = pd.DataFrame({"method": ["dcp"], "sots PSNR mean": [21.0], "sots PSNR std": [1.414],
        ...                       "sots SSIM mean": [0.85], "sots SSIM std": [0.0707], "sots n": [2],
        ...                       "sots s/image": [0.1]})
        >>> print(summary_markdown(table))
        | method | sots PSNR (dB) | sots SSIM | sots s/image |
        |---|---|---|---|
        | dcp | 21.00 ± 1.41 | 0.8500 ± 0.0707 | 0.10 |
        <BLANKLINE>
        n per dataset: sots 2.
    """
    datasets_ = [c[:-len(" PSNR mean")] for c in table.columns if c.endswith(" PSNR mean")]
    head = ["method"] + [f"{d} {m}" for d in datasets_ for m in ("PSNR (dB)", "SSIM", "s/image")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.to_dict("records"):
        cells = [str(row["method"])]
        for d in datasets_:
            cells.append(f"{row[f'{d} PSNR mean']:.2f} ± {row[f'{d} PSNR std']:.2f}")
            cells.append(f"{row[f'{d} SSIM mean']:.4f} ± {row[f'{d} SSIM std']:.4f}")
            cells.append(f"{row[f'{d} s/image']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    counts = ", ".join(f"{d} {int(table[f'{d} n'].max())}" for d in datasets_)
    return "\n".join(lines) + f"\n\nn per dataset: {counts}."


# --------------------------------------------------------------------------------------------------- grid
def save_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], path: str | os.PathLike,
              row_labels: Sequence[str] = ()) -> pathlib.Path:
    """Write a grid of images (one list of (H, W, 3) [0, 1] arrays per row, one title per column) as a PNG
    with matplotlib's Agg backend, atomically.

    Examples:
        >>> import tempfile
        >>> out = save_grid([[np.zeros((8, 8, 3)), np.ones((8, 8, 3))]], ["hazy", "clear"],
        ...                 pathlib.Path(tempfile.mkdtemp(), "grid.png"))
        >>> image_io.read_image(out).shape[2]
        3
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), len(titles)
    fig = Figure(figsize=(2.4 * n_cols, 2.0 * n_rows + 0.3), dpi=100)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r][c]
            ax.imshow(np.clip(image, 0.0, 1.0))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=8)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write(path, buffer.getvalue())


def _grid_path(out_dir: pathlib.Path, method: str, hazy: str) -> pathlib.Path:
    return out_dir / "grid_images" / method / f"{pathlib.Path(hazy).stem}.png"


def _load_pair(hazy_path: str, clear_path: str, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    hazy = image_io.read_image(hazy_path)
    clear = metrics.center_crop_to(image_io.read_image(clear_path), hazy, clear_path, hazy_path)
    if image_size is not None:
        hazy, clear = (tf.image.resize(x, (image_size, image_size), antialias=True).numpy() for x in (hazy, clear))
    return hazy, clear


def _check_headers(paths) -> None:
    """Read every file's header before any scoring: one ValueError naming each unreadable, non-image or oversized
    file (`tfdehaze.data.io.check_image_size`, the pixel limit of ``--max-pixels`` / ``TFDEHAZE_MAX_PIXELS``)."""
    problems = []
    for path in dict.fromkeys(paths):
        try:
            image_io.check_image_size(path, require_format=True)
        except image_io.ImageError as error:
            problems.append(str(error))
    if problems:
        raise ValueError(f"{len(problems)} image(s) cannot be scored (nothing was scored): " + "; ".join(problems))


# ------------------------------------------------------------------------------------------------- driver
def evaluate_methods(methods: Sequence[str | os.PathLike], data: Sequence[tuple[str, pd.DataFrame]],
                     out_dir: str | os.PathLike, image_size: int | None = None, tile: int | None = None,
                     overlap: int | None = None, grid_images: int = 4, progress: bool = True,
                     loaders: dict[str, Callable[[], Callable]] | None = None) -> dict[str, Any]:
    """Score every method on every pair of ``data`` into ``out_dir`` (per_image.csv, summary.csv/.md, grid.png).

    Resumable: pairs already in ``out_dir/per_image.csv`` for that (dataset, method, image_size) are skipped, and a
    method is only loaded when it has pairs left. The results are rewritten atomically after every image. The
    header of every image left to score is read first: a non-image, a damaged header or an image above the pixel
    limit (`tfdehaze.data.io.max_pixels`) is named in a ValueError before anything is scored.

    Args:
        methods: specs for `load_method` (``dcp``, registered names, .keras files, run / SavedModel directories).
        data: ``[(dataset name, pairs)]`` as `load_datasets` returns.
        image_size: None (default): full resolution, as the papers score; S: both images resized to S x S.
        tile, overlap: tiled inference for large images (`load_method`); None: whole images.
        grid_images: how many images of the first dataset ``grid.png`` shows (0: no grid).
        loaders: method name -> a function returning its dehazer (instead of `load_method`; for tests).

    Returns:
        ``{"per_image", "summary_csv", "summary_md", "grid"}`` paths and the counts ``scored`` and ``skipped``.

    Examples:
        >>> import tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> rng = np.random.default_rng(0)
        >>> for name in ("a.png", "b.png"):
        ...     clear = rng.uniform(size=(16, 16, 3))
        ...     _ = image_io.write_image(root / "toy" / "clear" / name, clear)
        ...     _ = image_io.write_image(root / "toy" / "hazy" / name, 0.5 * clear + 0.4)
        >>> data = load_datasets(data=[(root / "toy" / "hazy", root / "toy" / "clear")])
        >>> loaders = {"invert": lambda: (lambda x: {"dehazed": (x - 0.4) / 0.5})}
        >>> first = evaluate_methods(["invert"], data, root / "eval", progress=False, loaders=loaders)
        >>> first["scored"], first["skipped"], sorted(p.name for p in (root / "eval").glob("*.*"))
        (2, 0, ['grid.png', 'per_image.csv', 'summary.csv', 'summary.md'])
        >>> evaluate_methods(["invert"], data, root / "eval", progress=False, loaders=loaders)["skipped"]
        2
        >>> bool((read_results(first["per_image"])["psnr"] > 35).all())
        True
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / "per_image.csv"
    results = read_results(csv)
    size_key = "full" if image_size is None else str(int(image_size))
    done = set(zip(*(results[c].astype(str) for c in KEY))) if len(results) else set()
    names = [method_name(m) for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"two methods share a name: {names}; rename a file or folder")
    todo = []
    skipped = 0
    for dataset, pairs in data:
        for name, spec in zip(names, methods):
            for hazy, clear in zip(pairs["hazy"].astype(str), pairs["clear"].astype(str)):
                if (dataset, name, hazy, size_key) in done:
                    skipped += 1
                else:
                    todo.append((dataset, name, spec, hazy, clear))
    _check_headers(path for _, _, _, hazy, clear in todo for path in (hazy, clear))
    if progress:
        print(f"{len(todo)} image(s) to score, {skipped} skipped (already in {csv})", flush=True)
    grid_set = set(data[0][1]["hazy"].astype(str).tolist()[:grid_images]) if data and grid_images else set()
    bar = None
    if progress and todo:
        import keras

        bar = keras.utils.Progbar(len(todo), unit_name="image")
    loaded: dict[str, Callable] = {}
    new_rows: list[dict] = []
    for i, (dataset, name, spec, hazy_path, clear_path) in enumerate(todo):
        if name not in loaded:
            loaded.clear()  # one model in memory at a time
            loaded[name] = loaders[name]() if loaders and name in loaders else load_method(spec, tile, overlap)
        fn = loaded[name]
        captured: dict[str, Any] = {}

        def timed(batch, fn=fn, captured=captured):
            start = time.perf_counter()
            out = fn(batch)
            out = out if isinstance(out, dict) else {"dehazed": out}
            dehazed = np.asarray(out["dehazed"], np.float32)
            captured["seconds"] = time.perf_counter() - start
            captured["dehazed"] = dehazed
            return dehazed

        pair = pd.DataFrame({"hazy": [hazy_path], "clear": [clear_path]})
        scored = metrics.evaluate(timed, pair, image_size=image_size, name=name, dataset=dataset).iloc[0]
        if hazy_path in grid_set:
            image_io.write_image(_grid_path(out_dir, name, hazy_path), np.clip(captured["dehazed"][0], 0, 1))
        row = {c: scored[c] for c in ("dataset", "method", "image", "hazy", "clear", *metrics.METRICS)}
        row.update(image_size=size_key, seconds=captured["seconds"])
        new_rows.append(row)
        new = pd.DataFrame([row], columns=COLUMNS)
        results = pd.concat([results, new], ignore_index=True) if len(results) else new
        _write_results(results, csv)
        if bar is not None:
            bar.update(i + 1)
    loaded.clear()

    current = results[results["image_size"].astype(str) == size_key]
    current = current[current["method"].isin(names)]
    current = current[current["dataset"].isin([d for d, _ in data])]
    table = summary_table(current)
    summary_csv = atomic_write(out_dir / "summary.csv", table.to_csv(index=False, lineterminator="\n"))
    summary_md = atomic_write(out_dir / "summary.md", summary_markdown(table) + "\n")
    grid = None
    if grid_set:
        grid = _write_grid(out_dir, data[0][1], names, methods, grid_images, image_size, tile, overlap, loaders)
    return {"per_image": csv, "summary_csv": summary_csv, "summary_md": summary_md, "grid": grid,
            "scored": len(new_rows), "skipped": skipped}


def _write_grid(out_dir, pairs, names, methods, count, image_size, tile, overlap, loaders):
    """grid.png from the saved outputs of the first ``count`` pairs (recomputed where a PNG is missing)."""
    rows, labels = [], []
    for hazy_path, clear_path in list(zip(pairs["hazy"].astype(str), pairs["clear"].astype(str)))[:count]:
        hazy, clear = _load_pair(hazy_path, clear_path, image_size)
        row = [hazy]
        for name, spec in zip(names, methods):
            path = _grid_path(out_dir, name, hazy_path)
            if not path.is_file():
                fn = loaders[name]() if loaders and name in loaders else load_method(spec, tile, overlap)
                out = fn(tf.constant(hazy[None]))
                out = out if isinstance(out, dict) else {"dehazed": out}
                image_io.write_image(path, np.clip(np.asarray(out["dehazed"])[0], 0, 1))
            row.append(image_io.read_image(path))
        rows.append(row + [clear])
        labels.append(pathlib.Path(hazy_path).name)
    return save_grid(rows, ["hazy", *names, "clear"], out_dir / "grid.png", labels)


__all__ = ["COLUMNS", "HAZY_ROW", "KEY", "dataset_name", "evaluate_methods", "load_datasets", "load_method",
           "method_name", "read_results", "save_grid", "summary_markdown", "summary_table"]
