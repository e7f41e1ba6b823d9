"""The core is shared by Blender and the server: it must import neither bpy nor torch."""

import pkgutil
import subprocess
import sys

import seethrough_core


def test_core_imports_neither_bpy_nor_torch():
    modules = [f"seethrough_core.{m.name}" for m in pkgutil.iter_modules(seethrough_core.__path__)]
    modules.remove("seethrough_core.__main__")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "heavy = {'bpy', 'torch', 'diffusers', 'transformers'}\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(modules) >= 8
    assert run.stdout.strip() == ""
