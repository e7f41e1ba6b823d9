"""The `seethrough` command line: the top of the project, above the core, the add-on and the server.

Each sub-command has its own module, which loads its side (bpy or torch) only when it runs.
"""

from seethrough_core import __version__

__all__ = ["__version__"]
