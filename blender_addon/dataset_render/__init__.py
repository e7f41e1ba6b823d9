"""The Blender side of `seethrough dataset make`: asset libraries, target renders and the background worker.

Command-line only: the extension zip leaves this folder out (seethrough/build_addon.py).
"""
