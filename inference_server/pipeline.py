"""SeeThroughPipeline: FLUX.1-dev text-to-image with SeeThrough3D's occlusion-aware layout control.

One request: compose the training-template prompt, encode it (T5 + CLIP) and find each box's
``call_ids``; draw the initial noise from a CPU generator seeded with the request seed; VAE-encode the
OSCR render into 1024 condition tokens (sampling with the same generator, as the reference did); build
the attention mask once; denoise with FLUX's flow-matching Euler schedule while the condition stream
runs beside the image; decode. Progress goes only to ``step_callback``.

Speed and memory options (docs/performance.md): ``condition_cache`` computes the condition stream once
and reuses its keys/values (an approximation, off by default); ``compile`` compiles the transformer
blocks (regional, cached on disk); ``memory="24gb"`` quantizes the transformer (fp8 or NF4) and streams
the T5 encoder from CPU memory, for 24 GB cards.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import FluxTransformer2DModel
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from seethrough_core.condition_input import ConditionInput
from seethrough_core.edit_input import EditInput
from seethrough_core.generation_settings import GenerationSettings, SettingError, check_step_cache
from seethrough_core.limits import DEFAULT_GUIDANCE, DEFAULT_STEPS, EDIT_FEATHER_PX, MAX_BOXES
from seethrough_core.oscr_spec import SEETHROUGH3D_V1, OscrProfile
from seethrough_core.prompt import compose_prompt
from seethrough_core.vocabulary import DEFAULT_DTYPE, DEFAULT_MEMORY_MODE, DEFAULT_QUANTIZATION
from seethrough_core.vocabulary import DTYPES as DTYPE_NAMES

from . import vae_tiles
from .attention import ATTENTION_PROCESSORS, DEFAULT_ATTENTION, AttentionLayout
from .compile import CompileNotices, CompileSettings, compiled_runners, use_compile_cache
from .components import COMPONENT_NAMES, MODEL_NAMES, FluxComponents
from .condition import CONDITION_TOKENS, condition_position_ids, encode_condition, oscr_to_pixels
from .cpu_alignment import align_cpu_weights
from .edit_blend import LatentEdit, composite
from .latents import PIXELS_PER_TOKEN, image_position_ids, pack_latents, unpack_latents
from .loading import load_components
from .lora import SeeThroughLoRA, load_seethrough_lora
from .model_errors import GenerationCancelled, SetupChecks, SetupError
from .offload import StreamedModule, stream_t5
from .placement import MEMORY_MODES, MemoryPlan, plan_memory
from .preview import LatentPreviewer
from .quantize import quantize_transformer
from .request_checks import validate_edit, validate_request
from .style_lora import StyleLoRA, activate, load_style_lora
from .text import PROMPT_CACHE_ENTRIES, T5_MAX_TOKENS, PromptEncoder
from .tiny import build_tiny_components
from .transformer import EAGER_RUNNERS, BlockRunners, SeeThroughTransformer
from .weights import WeightsFile, resolve_model_folder, resolve_seethrough_lora, resolve_style_lora

__all__ = [
    "MEMORY_MODES",
    "DenoiseReport",
    "GenerationCancelled",
    "GenerationOutput",
    "SeeThroughPipeline",
    "StepInfo",
]

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


@dataclass
class StepInfo:
    """Progress after one denoising step."""

    step: int  # 1-based
    total: int
    elapsed_s: float  # since the request started
    preview: np.ndarray | None = None  # small uint8 RGB preview, only on steps where one was asked for
    latents: torch.Tensor | None = None  # the packed latents after this step (the live tensor: copy to keep)


@dataclass
class GenerationOutput:
    image: np.ndarray  # uint8 [height, width, 3]
    prompt: str
    call_ids: list[list[int]]
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    is_noise: bool = False  # True for the tiny random model
    oscr_jpeg_quality: int | None = None  # the JPEG round trip the OSCR image went through (None: none)
    steps_computed: int | None = None  # denoising steps that ran every block (fewer with the step cache)
    condition_cache: bool | None = None  # the speed options this image was made with (the request's or
    step_cache: float | None = None  # the pipeline's default; step_cache None: off)


@dataclass
class DenoiseReport:
    """What one denoising loop did, filled in by ``denoise``."""

    steps_computed: int = 0  # steps that ran every block; the others reused the step cache
    condition_cache: bool = False  # the speed options the loop ran with
    step_cache: float | None = None


def _flux_shift(image_tokens: int, config) -> float:
    """FLUX's resolution-dependent timestep shift ``mu``: linear in the image token count."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_tokens * slope + (base_shift - slope * base_len)


def _check_device(device: str) -> torch.device:
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise SetupError(
            f"device '{device}' asked for but CUDA is not available here; use device='cpu' (slow)"
        )
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise SetupError(f"device '{device}' asked for but MPS is not available here")
    return target


class SeeThroughPipeline:
    """FLUX.1-dev + the SeeThrough3D condition LoRA (+ optional style LoRAs)."""

    max_boxes: int = MAX_BOXES
    max_prompt_tokens: int = T5_MAX_TOKENS  # of the composed prompt, EOS included
    profile: OscrProfile = SEETHROUGH3D_V1  # the checkpoint's OSCR conventions (condition JPEG quality)

    def __init__(
        self,
        components: FluxComponents,
        *,
        device: str | torch.device = "cpu",
        memory: str = "full",
        model_name: str = "",
        is_noise: bool = False,
        quantization: str = DEFAULT_QUANTIZATION,
        compile: bool | CompileSettings = False,
        condition_cache: bool = False,
        step_cache: float | None = None,
    ) -> None:
        """The pipeline over ``components`` (built in code or loaded by ``from_pretrained``), with their
        condition LoRA set."""
        self.plan = plan_memory(memory, quantization, torch.device(device), compiled=compile is not False)
        for name, component in components.by_name().items():
            setattr(self, name, component)
        self.device = torch.device(device)
        self.memory = memory
        self.model_name = model_name
        self.is_noise = is_noise
        self.prompt_encoder = PromptEncoder(
            self.tokenizer, self.text_encoder, self.tokenizer_2, self.text_encoder_2, PROMPT_CACHE_ENTRIES
        )
        self.condition_lora: SeeThroughLoRA | None = None
        self.lora_source: WeightsFile | None = None  # where the condition LoRA came from (None: built)
        self.style_loras: list[StyleLoRA] = []
        self._style_adapters_made = 0
        self.attention = DEFAULT_ATTENTION
        self.condition_cache = bool(condition_cache)
        self.step_cache: float | None = None
        self.set_step_cache(step_cache)
        self.runners: BlockRunners = EAGER_RUNNERS
        self.compile_notices = CompileNotices()
        self.text_encoder_stream: StreamedModule | None = None
        self.previewer = LatentPreviewer()
        self._place(self.plan)
        self.set_compile(compile)
        self.set_condition_lora(components.condition_lora)

    @property
    def identity(self) -> dict[str, Any]:
        """What this pipeline is and how it runs, as the server reports it (computed from the state)."""
        lora = self.condition_lora
        return {
            "model": self.model_name,
            "lora": self.lora_source.label if self.lora_source else None,
            "lora_sha256": self.lora_source.sha256 if self.lora_source else None,
            "lora_scale": lora.scale if lora is not None else None,
            "style_loras": [
                {"path": str(entry.path), "sha256": entry.sha256, "scale": entry.scale}
                for entry in self.style_loras
            ],
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "memory": self.memory,
            "quantization": self.plan.quantization,
            "attention": self.attention,
            "condition_cache": self.condition_cache,
            "step_cache": self.step_cache,
            "compile": self.runners is not EAGER_RUNNERS,
        }

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        lora: str | None,
        *,
        device: str = "cuda",
        dtype: str = DEFAULT_DTYPE,
        memory: str = DEFAULT_MEMORY_MODE,
        lora_scale: float = 1.0,
        style_loras: Sequence[tuple[str, float]] = (),
        quantization: str = DEFAULT_QUANTIZATION,
        compile: bool | CompileSettings = False,
        condition_cache: bool = False,
        step_cache: float | None = None,
    ) -> SeeThroughPipeline:
        """Load FLUX.1-dev from a local diffusers folder or a cached repo id (never downloads).

        ``lora`` is the SeeThrough3D LoRA: a .safetensors path, a folder holding it, or the cached repo id
        ``va1bhavagrawa1/seethrough3d-flux.1-weights``. ``memory="offload"`` keeps models on the CPU and
        moves each one to the device only while it runs; ``memory="24gb"`` quantizes the transformer
        (``quantization``: "auto" = fp8 on GPUs with fp8 units, else "nf4"; needs the extra
        seethrough[fp8] or seethrough[nf4]) and streams the T5 encoder from CPU memory. ``compile`` compiles
        the transformer blocks (the first request at each size compiles for minutes; cached on disk).
        ``condition_cache`` computes the condition stream once per request and reuses it (faster,
        approximate; see docs/performance.md). ``step_cache`` (a threshold; None: off) lets a step reuse
        the previous step's work of all blocks but the first when the first barely changed.
        """
        # Every problem at once, the files first: a missing folder is not hidden behind a missing GPU.
        checks = SetupChecks()
        if dtype not in DTYPES:
            checks.add(SetupError(f"dtype must be one of {sorted(DTYPES)}, got '{dtype}'"))
        folder = checks.run(resolve_model_folder, model)
        lora_path = checks.run(resolve_seethrough_lora, lora) if lora is not None else None
        for source, _ in style_loras:
            checks.run(resolve_style_lora, source)
        target = checks.run(_check_device, device)
        # a missing extra fails here, before any loading
        plan = (
            checks.run(plan_memory, memory, quantization, target, compile is not False)
            if target is not None
            else None
        )
        checks.raise_any()

        def place_transformer(transformer: FluxTransformer2DModel) -> None:
            # quantized straight onto the device before the encoders load, so the bf16 transformer and
            # the T5 encoder never sit in CPU memory together
            if plan.quantization is not None:
                quantize_transformer(transformer, plan.quantization, target, DTYPES[dtype])

        components = load_components(folder, DTYPES[dtype], place_transformer)
        pipeline = cls(
            components,
            device=target,
            memory=memory,
            model_name=str(model),
            quantization=quantization,  # resolves as above; the transformer is already quantized
            compile=compile,
            condition_cache=condition_cache,
            step_cache=step_cache,
        )
        if target.type == "cpu":  # computed where they were read: the same numbers as a model built in memory
            for module in pipeline._modules():
                align_cpu_weights(module)
        if lora_path is not None:
            pipeline.load_condition_lora(str(lora_path), scale=lora_scale)
        for source, scale in style_loras:
            pipeline.add_style_lora(source, scale)
        return pipeline

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        device: str = "cpu",
        *,
        memory: str = "full",
        quantization: str = DEFAULT_QUANTIZATION,
        compile: bool | CompileSettings = False,
        condition_cache: bool = False,
        step_cache: float | None = None,
    ) -> SeeThroughPipeline:
        """The same pipeline at toy size with random weights (and a random condition LoRA)."""
        pipeline = cls(
            build_tiny_components(seed),
            device=_check_device(device),
            model_name=f"random tiny (seed {seed})",
            is_noise=True,
            memory=memory,
            quantization=quantization,
            compile=compile,
            condition_cache=condition_cache,
            step_cache=step_cache,
        )
        pipeline.lora_source = WeightsFile("random tiny", None)
        return pipeline

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the base components in diffusers' FLUX layout (the LoRAs are not included)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index = {"_class_name": "FluxPipeline", "_diffusers_version": diffusers.__version__}
        for name in COMPONENT_NAMES:
            component = getattr(self, name)
            component.save_pretrained(folder / name)
            library = "diffusers" if type(component).__module__.startswith("diffusers") else "transformers"
            index[name] = [library, type(component).__name__]
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    # ----------------------------------------------------------------- LoRAs and settings

    def set_condition_lora(self, lora: SeeThroughLoRA | None) -> None:
        if lora is not None:
            lora = lora.to(device=self._transformer_device(), dtype=self.dtype)
        self.condition_lora = lora
        self.lora_source = None

    def load_condition_lora(self, source: str, scale: float = 1.0) -> None:
        """Load a released-layout SeeThrough3D LoRA; a bad file raises LoRAFormatError naming the key."""
        path = resolve_seethrough_lora(source)
        lora = load_seethrough_lora(path, self.transformer, scale=scale)
        self.set_condition_lora(lora)
        self.lora_source = WeightsFile.of(path)

    def lora_lines(self) -> list[str]:
        """The LoRAs in use, one line each with the file's absolute path, SHA-256 prefix and scale (logs)."""
        lora, source = self.condition_lora, self.lora_source
        if lora is None:
            lines = ["SeeThrough3D LoRA: none"]
        else:
            where = "built in memory" if source is None else source.label
            if source is not None and source.sha256:
                where += f" (sha256 {source.sha256})"
            lines = [f"SeeThrough3D LoRA: {where}, scale {lora.scale:g}"]
        return lines + [
            f"style LoRA: {entry.path} (sha256 {entry.sha256}), scale {entry.scale:g}"
            for entry in self.style_loras
        ]

    def set_lora_scale(self, scale: float) -> None:
        if self.condition_lora is None:
            raise SetupError("no SeeThrough3D LoRA is loaded")
        self.condition_lora.set_scale(scale)

    def add_style_lora(self, source: str, scale: float = 1.0) -> None:
        """Add an ordinary FLUX LoRA on top, applied to every token with ``scale``."""
        self.style_loras.append(self._load_style_lora(source, scale))
        activate(self.transformer, self.style_loras)

    def _load_style_lora(self, source: str, scale: float) -> StyleLoRA:
        self._style_adapters_made += 1  # a fresh adapter name, also after swaps
        return load_style_lora(self.transformer, source, scale, f"style_{self._style_adapters_made}")

    def swap_loras(
        self,
        lora: str | None = None,
        lora_scale: float | None = None,
        style_loras: Sequence[tuple[str, float]] | None = None,
    ) -> None:
        """Change the LoRAs between two generations (the server's ``set_lora``). ``lora``: a new
        SeeThrough3D LoRA file; ``lora_scale``: its scale (None keeps the current one); ``style_loras``:
        the complete new list of (file, scale) (None keeps them, empty removes them). All files are
        found and read first: on any problem (every one is reported) the LoRAs in use stay as they were.
        """
        checks = SetupChecks()
        path = checks.run(resolve_seethrough_lora, lora) if lora is not None else None
        condition = checks.run(load_seethrough_lora, path, self.transformer) if path is not None else None
        source = WeightsFile.of(path) if condition is not None else None  # read before anything changes
        if lora is None and lora_scale is not None and self.condition_lora is None:
            checks.add(SetupError("no SeeThrough3D LoRA is loaded: give a LoRA file to set its scale"))
        styles: list[StyleLoRA] = []
        for source, scale in style_loras or ():
            if (entry := checks.run(self._load_style_lora, source, scale)) is not None:
                styles.append(entry)
        if checks.problems:
            self._delete_style_adapters(styles)
            activate(self.transformer, self.style_loras)  # loading made the new ones active: undo that
            checks.raise_any()
        if condition is not None:
            scale = self.condition_lora.scale if self.condition_lora is not None else 1.0
            self.set_condition_lora(condition)
            self.lora_source = source
            self.condition_lora.set_scale(scale)  # a new file keeps the scale unless one is given
        if lora_scale is not None:
            self.condition_lora.set_scale(lora_scale)
        if style_loras is not None:
            self._delete_style_adapters(self.style_loras)
            self.style_loras = styles
            activate(self.transformer, self.style_loras)

    def _delete_style_adapters(self, entries: Sequence[StyleLoRA]) -> None:
        if entries:
            with warnings.catch_warnings():  # peft's "active adapter deleted": activate() follows
                warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                self.transformer.delete_adapters([entry.adapter_name for entry in entries])

    def set_attention(self, name: str) -> None:
        """``split`` (default, fast and exact), ``dense`` (one full mask per request) or ``dense-rebuild``
        (the full mask rebuilt in every block and step, as the reference does: a benchmark baseline)."""
        if name not in ATTENTION_PROCESSORS:
            raise SetupError(f"attention must be one of {sorted(ATTENTION_PROCESSORS)}, got '{name}'")
        self.attention = name

    def set_condition_cache(self, enabled: bool) -> None:
        """The default for requests that do not say: compute the condition stream once and reuse it."""
        self.condition_cache = bool(enabled)

    def set_step_cache(self, threshold: float | None) -> None:
        """The default for requests that do not say: None turns the step cache off; a threshold in
        0..MAX_STEP_CACHE turns it on (0 computes every step and is exact)."""
        try:
            check_step_cache(threshold)
        except SettingError as error:
            raise SetupError(str(error)) from None
        self.step_cache = None if threshold is None else float(threshold)

    def set_compile(self, compile: bool | CompileSettings) -> None:
        """Compile the transformer blocks (True: inductor, default settings) or go back to eager (False)."""
        if compile is False:
            self.runners = EAGER_RUNNERS
        else:
            settings = CompileSettings() if compile is True else compile
            self.runners = compiled_runners(settings)
            cache = use_compile_cache() if settings.backend == "inductor" else None
            self.compile_notices = CompileNotices(cache)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.x_embedder.weight.dtype

    # ----------------------------------------------------------------- generation

    def prompt_checker(self) -> Callable[[str, list[str]], None]:
        """A check of (scene_prompt, descriptions) for another thread: RequestError when the
        composed prompt is longer than the model reads (the server refuses it before `accepted`)."""
        return self.prompt_encoder.prompt_checker()

    def __call__(
        self,
        *,
        scene_prompt: str,
        descriptions: list[str],
        oscr_image: np.ndarray,
        box_token_masks: np.ndarray,
        width: int,
        height: int,
        seed: int,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        step_callback: Callable[[StepInfo], None] | None = None,
        preview_interval: int = 0,
        condition_cache: bool | None = None,
        oscr_jpeg_round_trip: bool = True,
        edit: EditInput | None = None,
        step_cache: float | None = None,
    ) -> GenerationOutput:
        """The diffusers-style call: ``generate`` with its settings and condition given as arguments."""
        settings = GenerationSettings(
            scene_prompt, descriptions, width, height, seed, num_inference_steps, guidance_scale,
            preview_interval, condition_cache, step_cache,
        )  # fmt: skip
        condition = ConditionInput(oscr_image, box_token_masks, oscr_jpeg_round_trip)
        return self.generate(settings, condition, edit, step_callback=step_callback)

    def generate(
        self,
        settings: GenerationSettings,
        condition: ConditionInput,
        edit: EditInput | None = None,
        *,
        step_callback: Callable[[StepInfo], None] | None = None,
    ) -> GenerationOutput:
        """Generate one image; ``GenerationCancelled`` from ``step_callback`` stops it before the decode.

        ``settings.seed`` must be set (the server picks one for a request without). The settings'
        ``condition_cache`` and ``step_cache`` override the pipeline's defaults (``set_condition_cache``,
        ``set_step_cache``) when given. With
        ``condition.jpeg_round_trip`` the OSCR image goes through JPEG at the profile's quality first, as
        the checkpoint's training renders were saved. ``edit`` regenerates only inside its mask of its
        previous image (docs/edit.md): the steps run are the last ``edit.strength`` of the schedule, and
        every pixel outside the mask is the previous image's.
        """
        started = time.perf_counter()
        oscr_image, box_token_masks = condition.oscr_image, condition.token_grids
        validate_request(settings, oscr_image, box_token_masks, self.max_boxes)
        width, height, seed = settings.width, settings.height, settings.seed
        if edit is not None:
            validate_edit(edit, width, height)
        timings: dict[str, float] = {}
        jpeg_quality = self.profile.condition_jpeg_quality
        composed = compose_prompt(settings.scene_prompt, list(settings.descriptions))
        self.prompt_encoder.tokenize(composed)  # rejects a too-long prompt before any model runs

        # a cached prompt needs no encoder: with memory="offload", none is moved to the device
        cached = self.prompt_encoder.is_cached(composed, self.dtype)
        with self._on_device(*(() if cached else (self.text_encoder, self.text_encoder_2))):
            encoding = self.prompt_encoder.encode(composed, self.dtype)
        timings["encode_text_s"] = self._lap(started)

        mark = time.perf_counter()
        generator = torch.Generator("cpu").manual_seed(int(seed))
        latents = self._initial_noise(generator, height, width)
        with self._on_device(self.vae):
            pixels = oscr_to_pixels(oscr_image, jpeg_quality if condition.jpeg_round_trip else None)
            cond_latents = encode_condition(self.vae, pixels, generator)
            if settings.preview_interval and not self.previewer.fitted:
                self.previewer.fit(self.vae)
        timings["encode_condition_s"] = self._lap(mark)
        timings["encode_s"] = timings["encode_text_s"] + timings["encode_condition_s"]
        latent_edit = None
        if edit is not None:
            mark = time.perf_counter()
            with self._on_device(self.vae):
                latent_edit = LatentEdit.prepare(self.vae, edit, latents).to(self.device)
            timings["encode_edit_s"] = self._lap(mark)

        mark = time.perf_counter()
        report = DenoiseReport()
        with self._on_device(self.transformer, *self._condition_lora_modules()):
            latents = self.denoise(
                latents=latents.to(self.device),
                prompt_embeds=encoding.prompt_embeds,
                pooled_embeds=encoding.pooled_embeds,
                call_ids=encoding.call_ids,
                cond_latents=cond_latents,
                box_token_masks=box_token_masks,
                width=width,
                height=height,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                step_callback=step_callback,
                preview_interval=settings.preview_interval,
                started=started,
                condition_cache=settings.condition_cache,
                edit=latent_edit,
                step_cache=settings.step_cache,
                report=report,
            )
        timings["denoise_s"] = self._lap(mark)

        mark = time.perf_counter()
        with self._on_device(self.vae):
            image = self.decode(latents, height, width)
        timings["decode_s"] = time.perf_counter() - mark
        if edit is not None:
            mark = time.perf_counter()
            image = composite(edit.image, image, edit.region(), EDIT_FEATHER_PX)
            timings["composite_s"] = time.perf_counter() - mark
        timings["total_s"] = time.perf_counter() - started
        return GenerationOutput(
            image=image,
            prompt=composed.text,
            call_ids=encoding.call_ids,
            seed=int(seed),
            timings=timings,
            is_noise=self.is_noise,
            oscr_jpeg_quality=jpeg_quality if condition.jpeg_round_trip else None,
            steps_computed=report.steps_computed,
            condition_cache=report.condition_cache,
            step_cache=report.step_cache,
        )

    @torch.inference_mode()
    def denoise(
        self,
        *,
        latents: torch.Tensor,
        prompt_embeds: torch.Tensor,
        pooled_embeds: torch.Tensor,
        call_ids: list[list[int]],
        cond_latents: torch.Tensor,
        box_token_masks: np.ndarray,
        width: int,
        height: int,
        num_inference_steps: int,
        guidance_scale: float,
        step_callback: Callable[[StepInfo], None] | None = None,
        preview_interval: int = 0,
        started: float | None = None,
        condition_cache: bool | None = None,
        edit: LatentEdit | None = None,
        step_cache: float | None = None,
        report: DenoiseReport | None = None,
    ) -> torch.Tensor:
        """The denoising loop on packed latents; returns the final packed latents.

        With ``edit`` the loop starts at its first step and pins the latents outside its region to the
        previous image after every step (``latents`` is then the job's noise, which ``edit`` holds too).
        ``step_cache`` overrides the pipeline's default threshold; ``report`` receives the steps computed.
        """
        started = time.perf_counter() if started is None else started
        cache_condition = self.condition_cache if condition_cache is None else bool(condition_cache)
        step_threshold = self.step_cache if step_cache is None else float(step_cache)
        device = self.device
        layout = AttentionLayout(
            text_len=prompt_embeds.shape[1],
            image_len=latents.shape[1],
            cond_len=CONDITION_TOKENS,
            call_ids=call_ids,
            box_token_masks=torch.from_numpy(
                np.ascontiguousarray(box_token_masks, dtype=bool).reshape(len(call_ids), -1)
            ),
        )
        attend = ATTENTION_PROCESSORS[self.attention]().prepare(layout, device, self.dtype)
        model = SeeThroughTransformer(self.transformer, self.condition_lora, self.runners)
        request = model.prepare(
            prompt_embeds,
            pooled_embeds,
            cond_latents,
            guidance_scale,
            image_position_ids(height, width),
            condition_position_ids(height, width),
            attend,
            cache_condition=cache_condition,
            step_cache=step_threshold,
        )
        compiling = ""
        if self.runners is not EAGER_RUNNERS:
            compiling = f"{width}x{height}, {self.attention} attention, condition cache {cache_condition}"
            if not self.compile_notices.first((width, height, self.attention, cache_condition), compiling):
                compiling = ""

        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        mu = _flux_shift(latents.shape[1], self.scheduler.config)
        self.scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
        timesteps = self.scheduler.timesteps
        first = 0
        if edit is not None:
            first = edit.first_step(len(timesteps))
            timesteps = timesteps[first:]
            self.scheduler.set_begin_index(first)
            latents = edit.start(self.scheduler.sigmas[first]).to(latents.dtype)
        schedule = self.scheduler.sigmas  # one per timestep, and 0 after the last
        total = len(timesteps)
        for index, t in enumerate(timesteps):
            timestep = t.expand(latents.shape[0]).to(latents.dtype)
            noise_pred = model(latents, timestep / 1000, request)
            previous = latents
            latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
            if edit is not None:
                latents = edit.pin(latents, schedule[first + index + 1]).to(previous.dtype)
            step = index + 1
            preview = None
            if step_callback is not None and preview_interval and step % preview_interval == 0:
                # flow matching: x_t = (1 - sigma) x_0 + sigma * noise and the model predicts noise - x_0
                clean = previous.float() - schedule[first + index].to(device) * noise_pred.float()
                preview = self.previewer(self._raw_latents(clean, height, width))
            if step_callback is not None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # so elapsed_s is real progress, not queued kernels
                step_callback(StepInfo(step, total, time.perf_counter() - started, preview, latents))
        if compiling:
            CompileNotices.done(compiling, time.perf_counter() - started)
        if report is not None:
            report.steps_computed = request.step_cache.computed if request.step_cache else total
            report.condition_cache, report.step_cache = cache_condition, step_threshold
        return latents

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, height: int, width: int) -> np.ndarray:
        """Packed latents -> uint8 [height, width, 3]."""
        raw = self._raw_latents(latents, height, width)
        parameter = next(self.vae.parameters())
        tiled = vae_tiles.needs_tiles(width, height, parameter.dtype, self.plan.vae_decode_budget_bytes)
        pixels = vae_tiles.decode(self.vae, raw.to(device=parameter.device, dtype=parameter.dtype), tiled)
        pixels = (pixels / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
        return (pixels * 255).round().astype(np.uint8)

    # ----------------------------------------------------------------- helpers

    def _initial_noise(self, generator: torch.Generator, height: int, width: int) -> torch.Tensor:
        channels = self.transformer.config.in_channels // 4
        shape = (1, channels, 2 * (height // PIXELS_PER_TOKEN), 2 * (width // PIXELS_PER_TOKEN))
        # drawn on the CPU from the request's generator: the same seed gives the same noise on any device
        return pack_latents(
            randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=self.dtype)
        )

    def _raw_latents(self, packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Undo packing and FLUX's latent normalisation."""
        config = self.vae.config
        return unpack_latents(packed, height, width) / config.scaling_factor + (config.shift_factor or 0.0)

    def _modules(self) -> list[nn.Module]:
        return [*(getattr(self, name) for name in MODEL_NAMES), *self._condition_lora_modules()]

    def _condition_lora_modules(self) -> list[nn.Module]:
        return [self.condition_lora] if self.condition_lora is not None else []

    def _transformer_device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def _place(self, plan: MemoryPlan) -> None:
        """Put each model where ``plan`` says (offload: all stay in CPU memory until they run)."""
        if plan.offload_all:
            return
        if plan.quantization is not None:
            quantize_transformer(self.transformer, plan.quantization, self.device, self.dtype)
        for module in self._modules():
            if module is self.text_encoder_2 and plan.stream_text_encoder:
                self.text_encoder_stream = stream_t5(module, self.device)
            else:
                module.to(self.device)

    @contextmanager
    def _on_device(self, *modules: nn.Module) -> Iterator[None]:
        """With memory="offload", hold ``modules`` on the device only inside the block."""
        if not self.plan.offload_all:
            yield
            return
        for module in modules:
            module.to(self.device)
        try:
            yield
        finally:
            for module in modules:
                module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _lap(self, since: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - since
