"""The ``>>>`` examples in mrisr's docstrings run and pass: one test per module of the package.

The same as ``pytest --doctest-modules mrisr`` (with ELLIPSIS), but collected from ``tests/`` so that the README's
``python -m pytest -q`` runs them too. Each module's examples run in a fresh temporary folder as the current
directory, so an example may write files by relative name (``save_volume(..., "zeros.nii.gz")``). Functions behind
a decorator (``@contextmanager``) count as their module's, which the standard finder would pass over.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import mrisr

MODULES = ["mrisr"] + sorted(m.name for m in pkgutil.walk_packages(mrisr.__path__, "mrisr."))
FLAGS = doctest.ELLIPSIS


class _Finder(doctest.DocTestFinder):
    """The standard finder, looking through decorators (``functools.wraps``) to the function's own module."""

    def _from_module(self, module, object):  # noqa: A002 - doctest's own parameter name
        return super()._from_module(module, inspect.unwrap(object) if inspect.isfunction(object) else object)


def module_doctests(name: str) -> list[doctest.DocTest]:
    """The doctests of module ``name`` that have at least one example."""
    module = importlib.import_module(name)
    return [t for t in _Finder(exclude_empty=True).find(module, name) if t.examples]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in module_doctests(name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)


def test_enough_examples_run():
    """Issue 18's floor: at least 100 docstring examples run (the package has several hundred)."""
    assert sum(len(t.examples) for name in MODULES for t in module_doctests(name)) >= 100
