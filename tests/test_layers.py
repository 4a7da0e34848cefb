"""Import layers, read from the source: the library's root modules reach into neither data/ nor
pipeline/, and no pipeline stage imports another stage (what they share lives in pred_files)."""

import ast
from pathlib import Path

import pytest

import deepauc
from deepauc import cli

SRC = Path(deepauc.__file__).parent
ROOT_MODULES = ["config", "io", "logs", "markdown", "metrics", "stats", "losses", "optim"]
# the submission format's reader and writer, which ensemble writes through; it also has a
# subcommand of its own (validate-submission) but is a format, not a stage
FORMAT_MODULES = {"deepauc.pipeline.submission"}
STAGES = sorted(
    {m for m, _ in cli.COMMANDS.values() if m.startswith("deepauc.pipeline.")} - FORMAT_MODULES
)


def module_path(module: str) -> Path:
    return SRC.joinpath(*module.split(".")[1:]).with_suffix(".py")


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, by absolute name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_the_stages_are_found():
    assert {"deepauc.pipeline.ensemble", "deepauc.pipeline.report"} <= set(STAGES)
    assert all(module_path(m).is_file() for m in STAGES)


@pytest.mark.parametrize("name", ROOT_MODULES)
def test_root_modules_import_neither_data_nor_pipeline(name):
    found = imports(SRC / f"{name}.py")
    assert found, name  # the scan reads imports at all
    below = sorted(m for m in found if m.startswith(("deepauc.data", "deepauc.pipeline")))
    assert not below, f"deepauc.{name} imports {below}"


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage(stage):
    others = sorted(imports(module_path(stage)) & (set(STAGES) - {stage}))
    assert not others, f"{stage} imports the stage(s) {others}"
