"""Checkpoint folders as training writes them (``ckpt-<step>.index`` / ``.data-*`` and the ``checkpoint`` state
file): which checkpoints there are, whether each reads back, and the newest that does.

Used by the training loop to resume (`tfdehaze.train.engine.Trainer`) and by `tfdehaze.models.registry.load_run` to
rebuild a trained model: a damaged state file or a damaged latest checkpoint falls back to the newest checkpoint
whose files read back, saying which were skipped and why.
"""
from __future__ import annotations

import os
import pathlib
import re

import tensorflow as tf


def join_names(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``.

    Examples:
        >>> from tfdehaze.checkpoints import join_names
        >>> join_names(["config.json"]), join_names(["a", "b", "c"])
        ('config.json', 'a, b and c')
    """
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


_CKPT_FILE = re.compile(r"^(ckpt-(\d+))\.(index|data-\d+-of-\d+)$")


def step_of(name: str) -> int:
    """N of ``ckpt-N``.

    Examples:
        >>> from tfdehaze.checkpoints import step_of
        >>> step_of("ckpt-12")
        12
    """
    return int(name.rsplit("-", 1)[1])


def checkpoint_state(folder: str | os.PathLike) -> tuple[list[str], str | None]:
    """(checkpoint names the ``checkpoint`` state file lists, latest first; why it cannot be read, or None).

    Examples:
        >>> import pathlib, tempfile
        >>> from tfdehaze.checkpoints import checkpoint_state
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\\n'
        ...                                        'all_model_checkpoint_paths: "ckpt-2"\\n')
        >>> checkpoint_state(folder)
        (['ckpt-4', 'ckpt-2'], None)
        >>> _ = (folder / "checkpoint").write_bytes(b"\\xff garbage")
        >>> checkpoint_state(folder)
        ([], 'it is not text')
    """
    folder = pathlib.Path(folder)
    if not (folder / "checkpoint").exists():
        return [], None
    try:
        state = tf.train.get_checkpoint_state(str(folder))
    except UnicodeDecodeError:
        return [], "it is not text"
    except Exception as error:  # e.g. an empty file: ValueError
        return [], f"{type(error).__name__}: {error}"
    if state is None or not state.model_checkpoint_path:
        return [], "it is not a checkpoint state file"
    paths = [state.model_checkpoint_path, *state.all_model_checkpoint_paths]
    names = [os.path.basename(path) for path in paths]
    names = [name for name in dict.fromkeys(names) if re.fullmatch(r"ckpt-\d+", name)]
    return names[:1] + sorted(names[1:], key=step_of, reverse=True), None


def checkpoint_files(folder: str | os.PathLike) -> list[str]:
    """Names ``ckpt-N`` of the checkpoint files in ``folder``, newest first (found by name, not by the state).

    Examples:
        >>> import pathlib, tempfile
        >>> from tfdehaze.checkpoints import checkpoint_files
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("ckpt-2.index", "ckpt-10.index", "ckpt-10.data-00000-of-00001", "notes.txt"):
        ...     _ = (folder / name).write_text("")
        >>> checkpoint_files(folder)
        ['ckpt-10', 'ckpt-2']
    """
    folder = pathlib.Path(folder)
    names = {match.group(1) for path in (folder.iterdir() if folder.is_dir() else ())
             if (match := _CKPT_FILE.match(path.name))}
    return sorted(names, key=step_of, reverse=True)


def tf_reason(error: BaseException) -> str:
    """The useful part of a TensorFlow error message (no function-node prefix or op suffix).

    Examples:
        >>> from tfdehaze.checkpoints import tf_reason
        >>> tf_reason(ValueError("{{function_node f}} Unsuccessful TensorSliceReader [Op:RestoreV2]"))
        'Unsuccessful TensorSliceReader'
    """
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text.strip())
    return re.sub(r"\s*\[Op:\w+\]$", "", text).splitlines()[0]


def unreadable(prefix: str | os.PathLike) -> str | None:
    """None when every tensor of checkpoint ``prefix`` reads back (TensorFlow checks each one's CRC32C), else which
    file is bad and why.

    Examples:
        >>> import pathlib, tempfile
        >>> import tensorflow as tf
        >>> from tfdehaze.checkpoints import unreadable
        >>> prefix = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(pathlib.Path(tempfile.mkdtemp()) / "ckpt-1"))
        >>> unreadable(prefix) is None
        True
        >>> data = pathlib.Path(prefix + ".data-00000-of-00001")
        >>> _ = data.write_bytes(data.read_bytes()[:2])          # truncated
        >>> unreadable(prefix)
        'ckpt-1.data-00000-of-00001 cannot be read (...)'
    """
    name = os.path.basename(prefix)
    if not os.path.exists(f"{prefix}.index"):
        return f"{name}.index is missing"
    data = sorted(os.path.basename(path) for path in tf.io.gfile.glob(f"{prefix}.data-*"))
    if not data:
        return f"{name}.data-00000-of-00001 is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as error:
        return f"{name}.index cannot be read ({tf_reason(error)})"
    try:
        for key in reader.get_variable_to_dtype_map():
            reader.get_tensor(key)
    except Exception as error:
        return f"{join_names(data)} cannot be read ({tf_reason(error)})"
    return None




def find_restorable(folder: str | os.PathLike) -> tuple[str | None, list[str], list[str]]:
    """(the newest checkpoint name ``ckpt-N`` in ``folder`` whose files read back, or None; notes on what was
    skipped and why; the names the state file lists).

    Candidates: the state file's checkpoints (latest first), then checkpoint files found by name (all of them when
    the state file cannot be read).

    Examples:
        >>> import pathlib, tempfile
        >>> import tensorflow as tf
        >>> from tfdehaze.checkpoints import find_restorable
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(folder), 3)
        >>> _ = manager.save(1), manager.save(2)
        >>> find_restorable(folder)[0]
        'ckpt-2'
        >>> _ = (folder / "checkpoint").write_bytes(b"\\xff\\xfe garbage")
        >>> _ = (folder / "ckpt-2.index").write_bytes(b"not an index")
        >>> chosen, notes, _ = find_restorable(folder)
        >>> chosen, len(notes)
        ('ckpt-1', 2)
    """
    folder = pathlib.Path(folder)
    listed, state_problem = checkpoint_state(folder)
    notes = [f"the checkpoint state file {folder / 'checkpoint'} cannot be read ({state_problem}); looking for "
             "checkpoints by file name"] if state_problem else []
    for name in listed + [name for name in checkpoint_files(folder) if name not in listed]:
        problem = unreadable(str(folder / name))
        if problem is None:
            return name, notes, listed
        notes.append(f"skipping checkpoint {folder / name}: {problem}")
    return None, notes, listed
