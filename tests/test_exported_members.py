"""The public surface: what ``connector_batching`` exports; the example needs nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import connector_batching

ROOT = Path(__file__).resolve().parents[1]


def test_every_exported_name_exists_and_belongs_to_the_library() -> None:
    assert len(set(connector_batching.__all__)) == len(connector_batching.__all__)
    for name in connector_batching.__all__:
        member = getattr(connector_batching, name)
        module = getattr(member, "__module__", None) or "connector_batching"
        if not isinstance(member, dict):
            assert module.startswith("connector_batching"), (name, module)


def test_the_contract_names_are_exported() -> None:
    for name in (
        "GenericBatchProcessor",
        "GenericBatchProcessorConfig",
        "WorkManager",
        "OpenCTIWorkManager",
        "BatchingConnectorMixin",
        "LocalWorkManager",
    ):
        assert name in connector_batching.__all__


def test_the_example_imports_the_library_only_from_its_root() -> None:
    offenders = []
    for path in sorted((ROOT / "example_connector").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if name.startswith("connector_batching."):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert offenders == []


def test_importing_the_library_does_not_import_pycti() -> None:
    import subprocess
    import sys

    code = "import sys, connector_batching; print('pycti' in sys.modules, 'pika' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
