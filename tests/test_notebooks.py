"""The notebooks in notebooks/ are stored without outputs and use only the package's public API.

(nbmake executes them, top to bottom, as part of the suite: setup.cfg's ``--nbmake`` over ``notebooks``.) Here,
without running them: every notebook parses as JSON, starts with a markdown cell and a parameter cell, has no
outputs and no execution counts, and imports only public ``tfdehaze`` modules plus numpy, matplotlib, pandas,
tensorflow, keras and the standard library — no private names, no ``sys.path`` changes.
"""
import ast
import importlib.util
import json
import pathlib
import sys

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
EXPECTED = ["01_quickstart.ipynb", "02_guided_filter.ipynb", "03_train_guided_pix2pix.ipynb",
            "04_distillation.ipynb", "05_export_and_serve.ipynb"]
THIRD_PARTY = {"numpy", "matplotlib", "pandas", "tensorflow", "keras"}


def load(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def code_cells(book):
    return [cell for cell in book["cells"] if cell["cell_type"] == "code"]


def source(cell):
    text = cell["source"]
    return "".join(text) if isinstance(text, list) else text


def python_of(cell):
    """The cell's source without IPython magics / shell escapes (lines starting with % or !)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source(cell).splitlines())


def imported_modules(tree):
    """(module, imported names) for every import statement of a parsed cell, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or ""), [alias.name for alias in node.names]


def import_problems(module, names):
    """Why ``from module import names`` (or ``import module``) is not allowed in a notebook; [] if it is."""
    if module.startswith("."):
        return [f"relative import {module!r}"]
    parts = module.split(".")
    problems = [f"private name {name!r} (from {module})" for name in names if name.startswith("_")]
    if any(part.startswith("_") for part in parts):
        problems.append(f"private module {module!r}")
    top = parts[0]
    if top == "tfdehaze":
        if importlib.util.find_spec(module) is None:
            problems.append(f"no module {module!r}")
        if names == ["*"]:
            problems.append(f"star import from {module}")
    elif top not in THIRD_PARTY and top not in sys.stdlib_module_names:
        problems.append(f"module {module!r} is neither tfdehaze, {sorted(THIRD_PARTY)} nor the standard library")
    return problems


def test_every_expected_notebook_is_there():
    assert [path.name for path in PATHS] == EXPECTED
    assert not (NOTEBOOKS / "quickstart.ipynb").exists()      # renamed to 01_quickstart.ipynb


@pytest.mark.parametrize("path", PATHS, ids=[path.name for path in PATHS])
def test_outputs_are_stripped(path):
    book = load(path)
    dirty = [(index, bool(cell.get("outputs")), cell.get("execution_count"))
             for index, cell in enumerate(book["cells"])
             if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells (index, has outputs, execution_count) {dirty}: save the notebook " \
                      f"with its outputs cleared (Jupyter: Edit > Clear Outputs of All Cells)"
    assert all("outputs" not in cell and "execution_count" not in cell
               for cell in book["cells"] if cell["cell_type"] != "code")


@pytest.mark.parametrize("path", PATHS, ids=[path.name for path in PATHS])
def test_starts_with_what_it_teaches_and_a_parameter_cell(path):
    cells = load(path)["cells"]
    assert cells[0]["cell_type"] == "markdown" and source(cells[0]).lstrip().startswith("#")
    assert cells[1]["cell_type"] == "code" and source(cells[1]).lstrip().startswith("# Parameters")
    assert "parameters" in cells[1].get("metadata", {}).get("tags", [])     # papermill's convention
    assert "import" not in source(cells[1])


@pytest.mark.parametrize("path", PATHS, ids=[path.name for path in PATHS])
def test_imports_public_api_only(path):
    problems = []
    for index, cell in enumerate(code_cells(load(path))):
        text = python_of(cell)
        tree = ast.parse(text, filename=f"{path.name} code cell {index}")
        for module, names in imported_modules(tree):
            problems += [f"code cell {index}: {problem}" for problem in import_problems(module, names)]
        if "sys.path" in text or "__import__" in text or "importlib" in text:
            problems.append(f"code cell {index}: changes or bypasses the import system")
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("module, names, ok", [
    ("tfdehaze.losses.affinity", ["pool_features"], True),
    ("tfdehaze.data", ["read_image"], True),
    ("numpy", [], True),
    ("json", [], True),
    ("tfdehaze.layers.guided_filter", ["_forward"], False),
    ("tfdehaze._private", [], False),
    ("tfdehaze.nothing", [], False),
    ("scipy", [], False),
    ("..tfdehaze", ["x"], False),
])
def test_the_import_rule_itself(module, names, ok):
    assert (import_problems(module, names) == []) is ok
