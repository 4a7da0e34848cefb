"""Every benchmark script imports: a name it takes from the library still exists there."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCH.glob("*.py")))
def test_bench_script_imports(script, monkeypatch):
    # under its own name: tests/ has modules of the same names (test_smoke)
    name = f"_bench_{script}"
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    assert module.__file__ == str(BENCH / f"{script}.py")
