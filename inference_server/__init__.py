"""The inference server: the only part of SeeThrough Studio that imports torch.

``pipeline.SeeThroughPipeline`` runs FLUX.1-dev with the SeeThrough3D condition stream; the ZeroMQ
server in ``server.py`` serves it.
"""
