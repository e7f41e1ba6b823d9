"""SeeThrough core: shared definitions with no bpy and no torch.

The layout schema, the OSCR profile, camera and mask geometry, token-grid math, the wire
protocol and its client. The Blender add-on and the inference server both import this one
package, so every convention is written exactly once.
"""

__version__ = "0.1.0"
