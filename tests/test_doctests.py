"""The runnable examples in the public docstrings (AUCMLoss, PESG, roc_auc) run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

# module -> the objects whose docstrings must carry a runnable example
EXAMPLES = {
    "deepauc.metrics": ["roc_auc", "partial_auc", "pauc_above_tpr"],
    "deepauc.losses": ["AUCMLoss"],
    "deepauc.optim": ["PESG"],
    "deepauc.stats": ["holm"],
}


@pytest.mark.parametrize("module_name", sorted(EXAMPLES))
def test_docstring_examples_run_and_hold(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    tests = {t.name.rsplit(".", 1)[-1]: t for t in finder.find(module) if t.examples}
    missing = [name for name in EXAMPLES[module_name] if name not in tests]
    assert not missing, f"{module_name}: no runnable example in {missing}"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests.values():
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0
