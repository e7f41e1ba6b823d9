"""Training the SeeThrough3D condition LoRA on a `seethrough dataset make` dataset (`seethrough train`).

The frozen FLUX.1-dev runs through the server's own forward (``transformer.py``); only the LoRA trains,
and every checkpoint is written in the released key layout, so `seethrough serve --lora` loads it.
"""
