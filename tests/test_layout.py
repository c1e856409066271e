"""The source tree keeps its rooms small: no module over 600 lines, no class over 300."""

from __future__ import annotations

import ast
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300


def test_no_module_or_class_is_too_big() -> None:
    """Every bridge module is at most 600 lines and every class in it at most 300."""
    too_big = []
    for path in sorted(BRIDGE.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(BRIDGE.parent)
        if source.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_big.append(f"{name}: class {node.name} {lines} lines")
    assert not too_big, too_big


def test_the_tree_shows_the_architecture() -> None:
    """genesys, kafka, fleet, sim and chaos are packages of their own."""
    for package in ("genesys", "kafka", "fleet", "sim", "chaos"):
        assert (BRIDGE / package / "__init__.py").is_file(), package
