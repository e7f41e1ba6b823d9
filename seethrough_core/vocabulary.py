"""Every choice list and named default that the command line, the add-on and the server share.

They live here, free of torch and bpy, so the command line can offer the server's choices without
importing the server, and the add-on the renderer's without the command line. The modules that act on
a choice (placement.py, quantize.py, training/config.py, compat.py) import it from here;
tests/core/test_vocabulary.py checks that every command offers exactly these.
"""

from __future__ import annotations

# OSCR render engines (compat.py maps them to Blender's identifiers); the profile renders with Cycles.
RENDER_ENGINES = ("cycles", "eevee")
DEFAULT_RENDER_ENGINE = "cycles"

# Server: where each model lives (placement.py), how the transformer is quantized (quantize.py), and
# the weights' dtype.
MEMORY_MODES = ("full", "offload", "24gb", "16gb")
DEFAULT_MEMORY_MODE = "full"
QUANTIZATIONS = ("fp8", "nf4")
QUANTIZATION_CHOICES = ("auto", "none", *QUANTIZATIONS)
DEFAULT_QUANTIZATION = "auto"
DTYPES = ("bfloat16", "float16", "float32")
DEFAULT_DTYPE = "bfloat16"
DEFAULT_MAX_QUEUE = 32  # jobs that may wait on a server

# Training (`seethrough train`)
TRAIN_LOSSES = ("flow", "amodal-balanced")
DEFAULT_TRAIN_LOSS = "flow"
TRAIN_MEMORY_MODES = ("full", "24gb")
DEFAULT_TRAIN_MEMORY_MODE = "full"

# Clients of a server
DEFAULT_SEED = 42  # the reference implementation's seed: batch, the add-on, training validation
DEFAULT_CLIENT_TIMEOUT_S = 30.0  # seconds of silence before a server counts as gone
