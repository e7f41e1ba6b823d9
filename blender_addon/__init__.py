"""SeeThrough for Blender: the Blender side of the project (the only code that imports bpy).

Native OSCR and mask rendering (render.py, oscr_scene.py), layout <-> scene conversion
(scene_io.py) and the API differences between Blender releases (compat.py).
"""
