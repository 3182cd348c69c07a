"""Every public class and function of the package has a docstring with an ``Examples:`` block (run as doctests by
the suite: ``--doctest-modules`` over ``tfdehaze/``) and type hints on its signature."""
import importlib
import inspect
import pathlib
import pkgutil

import pytest

import tfdehaze

# Command-line modules document their flags in --help, not in doctests.
SKIP_MODULES = {"tfdehaze.cli.dehaze", "tfdehaze.cli.train", "tfdehaze.cli.export", "tfdehaze.cli.serve"}


def public_objects():
    for info in pkgutil.walk_packages(tfdehaze.__path__, "tfdehaze."):
        if info.name in SKIP_MODULES:
            continue
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name, None)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == info.name:
                yield f"{info.name}.{name}", obj


OBJECTS = dict(public_objects())


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_public_api_has_runnable_examples(name):
    doc = inspect.getdoc(OBJECTS[name]) or ""
    assert "Examples:" in doc and ">>> " in doc, f"{name}: the docstring needs an 'Examples:' block with >>> lines"


@pytest.mark.parametrize("name", sorted(n for n, o in OBJECTS.items() if inspect.isfunction(o)))
def test_public_functions_have_type_hints(name):
    signature = inspect.signature(OBJECTS[name])
    untyped = [p.name for p in signature.parameters.values()
               if p.annotation is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not untyped, f"{name}: parameters without type hints: {untyped}"
    assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return annotation"


def test_references_cite_papers_not_files_beside_the_repository():
    root = pathlib.Path(tfdehaze.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if any(word in p.read_text() for word in ("papers/", "SPEC", "../shared"))]
    assert not offenders, f"cite the paper by title and equation, not files beside the repository: {offenders}"
