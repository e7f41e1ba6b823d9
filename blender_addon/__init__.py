"""SeeThrough for Blender: the Blender side of the project (the only code that imports bpy).

As a Blender 4.5+ extension (built by `seethrough build-addon`, see docs/addon.md) it adds the
"SeeThrough" sidebar tab: boxes with descriptions, OSCR rendering and generation on a server.
Native OSCR and mask rendering (render.py, oscr_scene.py), layout <-> scene conversion
(scene_io.py) and the API differences between Blender releases (compat.py) also serve the
`seethrough render` and `seethrough batch` commands.

Nothing here imports bpy at module level: the command line (the `seethrough` package) imports
this package outside Blender. register() and unregister() load the Blender modules lazily.
"""


def register() -> None:
    from . import registration

    registration.register()


def unregister() -> None:
    from . import registration

    registration.unregister()
