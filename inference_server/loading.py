"""Loading FLUX.1-dev's components from a diffusers-format folder, local files only.

Each component of ``components.FLUX_COMPONENTS`` is read from its subfolder; a failure names the
component and says how to get the model. A folder that loads but is not FLUX.1-dev (FLUX.1-schnell,
another pipeline) is refused before the first request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import FluxTransformer2DModel

from .components import FLUX_COMPONENTS, FluxComponents
from .model_errors import WeightsMismatchError, WeightsNotFoundError
from .weights import FLUX_HOW_TO_GET


def load_components(
    folder: Path,
    dtype: torch.dtype,
    place_transformer: Callable[[FluxTransformer2DModel], None] | None = None,
) -> FluxComponents:
    """Every component from its subfolder, models in ``dtype`` and in eval mode, checked to be FLUX.1-dev.

    ``place_transformer`` runs on the transformer as soon as it is loaded, before the other components.
    """
    loaded = {}
    for spec in FLUX_COMPONENTS:
        options = {spec.dtype_keyword: dtype} if spec.is_model else {}
        try:
            component = spec.loader.from_pretrained(
                folder, subfolder=spec.name, local_files_only=True, **options
            )
        except (OSError, ValueError) as error:
            raise WeightsNotFoundError(
                f"could not load the {spec.name} from {folder / spec.name}: {error}. The folder must hold "
                f"the complete diffusers-format FLUX.1-dev. To get it: {FLUX_HOW_TO_GET}."
            ) from error
        if spec.is_model:
            component.eval().requires_grad_(False)
        if spec.name == "transformer" and place_transformer is not None:
            place_transformer(component)
        loaded[spec.name] = component
    components = FluxComponents(**loaded)
    check_compatible(folder, components)
    return components


def check_compatible(folder: Path, components: FluxComponents) -> None:
    """Catch a wrong model (e.g. FLUX.1-schnell, another pipeline) before the first request."""
    index = json.loads((folder / "model_index.json").read_text())
    transformer, vae = components.transformer.config, components.vae.config
    problems = []
    if index.get("_class_name") != "FluxPipeline":
        problems.append(f"model_index.json names {index.get('_class_name')!r}, not 'FluxPipeline'")
    if not transformer.guidance_embeds:
        problems.append(
            "the transformer has no guidance embedding (FLUX.1-schnell?); SeeThrough3D needs FLUX.1-dev"
        )
    if transformer.in_channels != 4 * vae.latent_channels:
        problems.append(f"transformer in_channels {transformer.in_channels} != 4 x VAE latent channels")
    if 2 ** (len(vae.block_out_channels) - 1) != 8:
        problems.append("the VAE does not downsample by 8")
    if transformer.joint_attention_dim != components.text_encoder_2.config.d_model:
        problems.append("the transformer's text width does not match the T5 encoder")
    if transformer.pooled_projection_dim != components.text_encoder.config.hidden_size:
        problems.append("the transformer's pooled width does not match the CLIP encoder")
    if problems:
        raise WeightsMismatchError(f"{folder} is not a usable FLUX.1-dev: " + "; ".join(problems))
