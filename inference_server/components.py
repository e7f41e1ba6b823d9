"""The FLUX.1-dev pipeline's components, declared once.

Loading (``loading.py``), saving, placement on the device, offloading, weight alignment, the pipeline's
identity and the tiny random build all read this table instead of naming the components themselves.
The order is the order of loading: the transformer first, so the 24-GB mode can quantize it onto the
GPU before the text encoders are read.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

from .lora import SeeThroughLoRA


@dataclass(frozen=True)
class ComponentSpec:
    name: str  # attribute of the pipeline and subfolder of a diffusers-format model folder
    loader: type  # the class whose from_pretrained reads the subfolder (AutoTokenizer reads any tokenizer)
    dtype_keyword: str | None  # how from_pretrained takes the load dtype; None: no weights (not a model)

    @property
    def is_model(self) -> bool:
        return self.dtype_keyword is not None


FLUX_COMPONENTS: tuple[ComponentSpec, ...] = (
    ComponentSpec("transformer", FluxTransformer2DModel, "torch_dtype"),
    ComponentSpec("vae", AutoencoderKL, "torch_dtype"),
    ComponentSpec("text_encoder", CLIPTextModel, "dtype"),
    ComponentSpec("text_encoder_2", T5EncoderModel, "dtype"),
    ComponentSpec("tokenizer", AutoTokenizer, None),
    ComponentSpec("tokenizer_2", AutoTokenizer, None),
    ComponentSpec("scheduler", FlowMatchEulerDiscreteScheduler, None),
)
COMPONENT_NAMES = tuple(spec.name for spec in FLUX_COMPONENTS)
MODEL_NAMES = tuple(spec.name for spec in FLUX_COMPONENTS if spec.is_model)


@dataclass
class FluxComponents:
    """One set of components (built in code or loaded), with the SeeThrough3D LoRA when there is one."""

    transformer: FluxTransformer2DModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: T5EncoderModel
    tokenizer: object
    tokenizer_2: object
    scheduler: FlowMatchEulerDiscreteScheduler
    condition_lora: SeeThroughLoRA | None = None

    def by_name(self) -> dict[str, object]:
        """The components of FLUX_COMPONENTS, by name (the LoRA is not one of them)."""
        return {name: getattr(self, name) for name in COMPONENT_NAMES}
