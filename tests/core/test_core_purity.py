"""The rooms' import rules: the core imports no other room; bpy only on the Blender side, torch only on
the server side; the command line (`seethrough`) sits on top and nothing imports it.

Read from the source (every module, every import, even inside a function), and checked once at run time.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY_SERVER = {"torch", "diffusers", "transformers", "peft", "accelerate", "safetensors"}
FORBIDDEN = {
    "seethrough_core": {"seethrough", "blender_addon", "inference_server", "bpy", *HEAVY_SERVER},
    "blender_addon": {"seethrough", "inference_server", *HEAVY_SERVER},
    "inference_server": {"seethrough", "blender_addon", "bpy"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import in a file, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add((node.args[0].value.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_each_room_imports_only_what_it_may(room):
    files = sorted((ROOT / room).rglob("*.py"))
    assert len(files) >= 8
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {package}"
        for path in files
        for package, line in sorted(imported_packages(path))
        if package in FORBIDDEN[room]
    ]
    assert offences == []


def test_the_rule_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from blender_addon.render import x\n    import torch.nn\n")
    assert imported_packages(source) == {("blender_addon", 2), ("torch", 3)}


def test_importing_every_core_module_loads_neither_bpy_nor_torch():
    import pkgutil

    import seethrough_core

    modules = [f"seethrough_core.{m.name}" for m in pkgutil.iter_modules(seethrough_core.__path__)]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "heavy = {'bpy', 'torch', 'diffusers', 'transformers', 'blender_addon', 'inference_server'}\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(modules) >= 8
    assert run.stdout.strip() == ""
