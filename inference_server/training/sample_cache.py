"""Each dataset sample encoded once (VAE latents, T5/CLIP embeddings, box token masks), kept on disk.

Encoding FLUX's text and images costs more than a training step's share, so a dataset is encoded once
per model and resolution into ``<dataset>/cache/<model key>-<resolution>px/<sample id>.pt`` (or under
``--cache``). A sample whose files or prompt changed since it was encoded is encoded again.

The VAE posterior is kept as its mean and standard deviation (already shifted and scaled as FLUX
expects), and a fresh latent is sampled from it at every step, as the reference encodes the images
anew for every batch. The embeddings of the caption-dropout prompt (a single space, as the reference
uses) are kept once per cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from seethrough_core.dataset_format import DatasetError, DatasetSample, read_samples
from seethrough_core.prompt import ComposedPrompt
from seethrough_core.token_grid import binarize, pool_to_token_grid

from ..components import FluxComponents
from ..condition import oscr_to_pixels
from ..latents import PIXELS_PER_TOKEN, VAE_DOWNSAMPLE
from ..model_errors import RequestError
from ..text import PromptEncoder

CACHE_VERSION = 1
DROPPED_CAPTION = " "  # the reference's caption-dropout prompt
EMPTY_PROMPT_FILE = "empty_prompt.pt"


@dataclass
class EncodedSample:
    """One sample as the trainer uses it; tensors on the CPU."""

    id: str
    latent_mean: torch.Tensor  # [C, h, w] target latents (shifted and scaled), h = height / 8
    latent_std: torch.Tensor
    cond_mean: torch.Tensor  # [C, 64, 64] OSCR latents
    cond_std: torch.Tensor
    prompt_embeds: torch.Tensor  # [512, joint_attention_dim]
    pooled_embeds: torch.Tensor  # [pooled_projection_dim]
    call_ids: list[list[int]]
    token_masks: torch.Tensor  # bool [boxes, 1024]: condition tokens inside each box (amodal)
    visible: torch.Tensor  # [boxes, h, w]: share of each latent pixel inside the box's visible mask
    visibility: torch.Tensor  # [boxes] visible / amodal pixels
    fingerprint: str

    @property
    def height(self) -> int:
        return self.latent_mean.shape[-2] * VAE_DOWNSAMPLE

    @property
    def width(self) -> int:
        return self.latent_mean.shape[-1] * VAE_DOWNSAMPLE


@dataclass
class PromptEmbeds:
    prompt_embeds: torch.Tensor  # [512, joint_attention_dim]
    pooled_embeds: torch.Tensor  # [pooled_projection_dim]


class EncodedDataset:
    """The encoded samples of one or more datasets, read from disk when asked for."""

    def __init__(self, files: list[Path], empty_prompt: PromptEmbeds) -> None:
        if not files:
            raise DatasetError("the datasets hold no samples: nothing to train on")
        self.files = files
        self.empty_prompt = empty_prompt

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> EncodedSample:
        return EncodedSample(**torch.load(self.files[index], map_location="cpu", weights_only=True))


def model_cache_key(model_name: str, components: FluxComponents) -> str:
    """Short key of what shapes the cached tensors: the model's identity and its encoders' configs."""
    configs = {
        "model": model_name,
        "vae": dict(components.vae.config),
        "t5": components.text_encoder_2.config.to_dict(),
        "clip": components.text_encoder.config.to_dict(),
        "dtype": str(components.transformer.x_embedder.weight.dtype),
        "version": CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(configs, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_folder(dataset: Path, cache_root: Path | None, key: str, resolution: int) -> Path:
    root = cache_root / _safe(dataset) if cache_root is not None else dataset / "cache"
    return root / f"{key}-{resolution}px"


def encode_datasets(
    datasets: Sequence[Path],
    components: FluxComponents,
    model_name: str,
    resolution: int,
    device: torch.device,
    cache_root: Path | None = None,
    show_progress: bool = True,
) -> EncodedDataset:
    """Encode what is not cached yet (VAE and text encoders on ``device`` meanwhile); return all samples.

    Raises DatasetError naming the dataset, sample and field or file for a sample that cannot be used.
    """
    key = model_cache_key(model_name, components)
    encoder = _SampleEncoder(components, resolution, device)
    files: list[Path] = []
    empty_prompt: PromptEmbeds | None = None
    work = []
    for dataset in datasets:
        dataset = Path(dataset)
        folder = cache_folder(dataset, cache_root, key, resolution)
        folder.mkdir(parents=True, exist_ok=True)
        if empty_prompt is None:
            empty_prompt = _cached_empty_prompt(folder / EMPTY_PROMPT_FILE, encoder)
        for sample in read_samples(dataset):
            path = folder / f"{_safe_id(sample.id)}.pt"
            files.append(path)
            fingerprint = sample_fingerprint(dataset, sample)
            if not _is_current(path, fingerprint):
                work.append((dataset, sample, path, fingerprint))
    for dataset, sample, path, fingerprint in tqdm(
        work, desc="encoding the dataset", unit="sample", disable=not show_progress or not work
    ):
        _save_atomic(asdict(encoder.encode(dataset, sample, fingerprint)), path)
    assert empty_prompt is not None or not files
    return EncodedDataset(files, empty_prompt or encoder.empty_prompt())


def sample_fingerprint(dataset: Path, sample: DatasetSample) -> str:
    """Changes when the sample's files or text change: its cached encoding is then redone."""
    parts: list[object] = [sample.prompt, sample.spans, sample.visibility, CACHE_VERSION]
    for relative in (sample.target, sample.oscr, *sample.amodal_masks, *sample.visible_masks):
        try:
            stat = (dataset / relative).stat()
        except OSError:
            raise DatasetError(
                f"{dataset}: sample {sample.id}: the file {relative} is missing; re-make the dataset with "
                "`seethrough dataset make` or remove the sample's line from metadata.jsonl"
            ) from None
        parts.append((relative, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


class _SampleEncoder:
    def __init__(self, components: FluxComponents, resolution: int, device: torch.device) -> None:
        self.vae = components.vae
        self.dtype = components.transformer.x_embedder.weight.dtype  # never quantized: the compute dtype
        self.resolution = resolution
        self.device = device
        self.prompts = PromptEncoder(
            components.tokenizer, components.text_encoder, components.tokenizer_2, components.text_encoder_2
        )

    def empty_prompt(self) -> PromptEmbeds:
        composed = ComposedPrompt(text=DROPPED_CAPTION, descriptions=(), spans=(), scene_prompt="")
        encoding = self.prompts.encode(composed, self.dtype)
        return PromptEmbeds(encoding.prompt_embeds[0].cpu(), encoding.pooled_embeds[0].cpu())

    def encode(self, dataset: Path, sample: DatasetSample, fingerprint: str) -> EncodedSample:
        where = f"{dataset}: sample {sample.id}"
        composed = _composed_prompt(sample, where)
        try:
            encoding = self.prompts.encode(composed, self.dtype)
        except RequestError as error:
            raise DatasetError(f"{where}: {error}") from None
        target = _read_rgb(dataset / sample.target, where)
        width, height = training_size(target.width, target.height, self.resolution)
        target = target.resize((width, height), resample=Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(target, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        latent_mean, latent_std = self._posterior(pixels)
        oscr = np.asarray(_read_rgb(dataset / sample.oscr, where))
        cond_mean, cond_std = self._posterior(oscr_to_pixels(oscr, None))  # the saved JPEG is the round trip
        amodal = [_read_mask(dataset / name, where) for name in sample.amodal_masks]
        visible = [_read_mask(dataset / name, where) for name in sample.visible_masks]
        latent_size = (width // VAE_DOWNSAMPLE, height // VAE_DOWNSAMPLE)
        return EncodedSample(
            id=sample.id,
            latent_mean=latent_mean,
            latent_std=latent_std,
            cond_mean=cond_mean,
            cond_std=cond_std,
            prompt_embeds=encoding.prompt_embeds[0].cpu(),
            pooled_embeds=encoding.pooled_embeds[0].cpu(),
            call_ids=encoding.call_ids,
            token_masks=torch.from_numpy(
                np.stack([pool_to_token_grid(mask).reshape(-1) for mask in amodal])
                if amodal
                else np.zeros((0, 1024), dtype=bool)
            ),
            visible=torch.stack([_coverage(mask, latent_size) for mask in visible]).half()
            if visible
            else torch.zeros(0, latent_size[1], latent_size[0], dtype=torch.float16),
            visibility=torch.tensor(sample.visibility, dtype=torch.float32),
            fingerprint=fingerprint,
        )

    @torch.inference_mode()
    def _posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE posterior of [1, 3, H, W] pixels as FLUX's normalised latents: (mean, std) [C, h, w]."""
        parameter = next(self.vae.parameters())
        posterior = self.vae.encode(pixels.to(parameter.device, parameter.dtype)).latent_dist
        shift, scale = self.vae.config.shift_factor or 0.0, self.vae.config.scaling_factor
        mean = ((posterior.mean.float() - shift) * scale)[0].cpu()
        return mean, (posterior.std.float() * scale)[0].cpu()


def training_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The target's size in training: longest side ``resolution``, each side a multiple of 16 (rounded)."""
    scale = resolution / max(width, height)
    return tuple(  # type: ignore[return-value]
        max(PIXELS_PER_TOKEN, round(side * scale / PIXELS_PER_TOKEN) * PIXELS_PER_TOKEN)
        for side in (width, height)
    )


def _composed_prompt(sample: DatasetSample, where: str) -> ComposedPrompt:
    spans = tuple((int(start), int(end)) for start, end in sample.spans)
    for index, ((start, end), description) in enumerate(zip(spans, sample.descriptions, strict=True)):
        if sample.prompt[start:end] != description:
            raise DatasetError(
                f"{where}: spans[{index}] = [{start}, {end}] marks {sample.prompt[start:end]!r} in the "
                f"prompt, "
                f"not the description {description!r}; re-make the dataset"
            )
    return ComposedPrompt(sample.prompt, tuple(sample.descriptions), spans, scene_prompt="")


def _read_rgb(path: Path, where: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise DatasetError(f"{where}: cannot read the image {path}: {error}") from None


def _read_mask(path: Path, where: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return binarize(np.asarray(image.convert("L")))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{where}: cannot read the mask {path}: {error}") from None


def _coverage(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The share of each latent pixel inside a full-size bool mask (area average)."""
    image = Image.fromarray(mask.astype(np.float32), mode="F").resize(size, resample=Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy())


def _cached_empty_prompt(path: Path, encoder: _SampleEncoder) -> PromptEmbeds:
    if path.is_file():
        return PromptEmbeds(**torch.load(path, map_location="cpu", weights_only=True))
    embeds = encoder.empty_prompt()
    _save_atomic(asdict(embeds), path)
    return embeds


def _is_current(path: Path, fingerprint: str) -> bool:
    if not path.is_file():
        return False
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("fingerprint") == fingerprint
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply encoded again
        return False


def _save_atomic(data: dict, path: Path) -> None:
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    torch.save(data, partial)
    os.replace(partial, path)


def _safe_id(sample_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in sample_id)


def _safe(dataset: Path) -> str:
    """A folder name for a dataset's cache under a shared --cache root."""
    resolved = str(dataset.resolve())
    return f"{_safe_id(dataset.resolve().name)}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
