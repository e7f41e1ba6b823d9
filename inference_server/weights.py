"""Finding weights on this machine: local paths, or Hugging Face repo ids in the local cache only.

The server never downloads anything. When something is missing, the error says what was looked for,
where, and the command that fetches it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from .components import COMPONENT_NAMES
from .model_errors import WeightsNotFoundError

FLUX_REPO = "black-forest-labs/FLUX.1-dev"
SEETHROUGH_LORA_REPO = "va1bhavagrawa1/seethrough3d-flux.1-weights"
SEETHROUGH_LORA_FILE = "checkpoints/seethrough3d_release/lora.safetensors"
STYLE_LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' name for a saved LoRA
SHA256_PREFIX = 12  # hex digits of a weights file's SHA-256 shown in identities and records

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

FLUX_HOW_TO_GET = (
    f"accept the licence at https://huggingface.co/{FLUX_REPO}, log in (`hf auth login`), then run "
    f"`hf download {FLUX_REPO}` (older huggingface_hub: `huggingface-cli download {FLUX_REPO}`); "
    "or pass the path of a local diffusers-format FLUX.1-dev folder"
)
LORA_HOW_TO_GET = (
    f"run `hf download {SEETHROUGH_LORA_REPO} {SEETHROUGH_LORA_FILE}` (older huggingface_hub: "
    f"`huggingface-cli download {SEETHROUGH_LORA_REPO} {SEETHROUGH_LORA_FILE}`), or pass the path of the "
    "lora.safetensors file"
)


def hf_cache_dir() -> Path:
    """The hub cache as the environment says now (HF_HUB_CACHE, then HF_HOME/hub, then the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(hf_constants.HF_HUB_CACHE)


def looks_like_repo_id(source: str) -> bool:
    return bool(_REPO_ID.match(source)) and not Path(source).exists()


def cached_snapshot(repo_id: str, what: str, how_to_get: str) -> Path:
    """The folder of a repo already in the local Hugging Face cache; never downloads."""
    cache = hf_cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError as error:
        raise WeightsNotFoundError(
            f"{what} '{repo_id}' is not in the local Hugging Face cache {cache} (the server never "
            f"downloads). To get it: {how_to_get}."
        ) from error


def resolve_model_folder(model: str) -> Path:
    """A diffusers-format FLUX.1-dev folder from a local path or a cached repo id."""
    if looks_like_repo_id(model):
        folder = cached_snapshot(model, "model", FLUX_HOW_TO_GET)
    else:
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise WeightsNotFoundError(
                f"no model folder at {folder.resolve()}. Expected a diffusers-format FLUX.1-dev folder "
                f"(model_index.json and {', '.join(COMPONENT_NAMES)}) or a Hugging Face repo id in the "
                f"local cache {hf_cache_dir()}. To get it: {FLUX_HOW_TO_GET}."
            )
    check_model_folder(folder)
    return folder


def check_model_folder(folder: Path) -> None:
    """Every component folder a FLUX pipeline needs must be there."""
    missing = [name for name in ("model_index.json", *COMPONENT_NAMES) if not (folder / name).exists()]
    if missing:
        raise WeightsNotFoundError(
            f"the model folder {folder} is incomplete: missing {', '.join(missing)}. "
            f"It must be a diffusers-format FLUX.1-dev folder. To get it: {FLUX_HOW_TO_GET}."
        )


def resolve_lora_file(source: str, default_file: str, what: str, how_to_get: str) -> Path:
    """A .safetensors LoRA (its absolute path) from a file path, a folder holding it, or a repo id in the
    local cache.

    In a folder (or a cached repo snapshot) ``default_file`` is taken first, then the only .safetensors.
    """
    if looks_like_repo_id(source):
        folder = cached_snapshot(source, what, how_to_get)
        return absolute(_lora_in_folder(folder, default_file, what, how_to_get))
    path = Path(source).expanduser()
    if path.is_dir():
        return absolute(_lora_in_folder(path, default_file, what, how_to_get))
    if not path.is_file():
        raise WeightsNotFoundError(f"no {what} file at {path.resolve()}. To get it: {how_to_get}.")
    return absolute(path)


def absolute(path: Path) -> Path:
    """The absolute path, so logs and records name the file whatever the working folder; symlinks are
    kept (a Hugging Face cache snapshot's file keeps its name instead of becoming a blob hash)."""
    return Path(os.path.abspath(path))


def _lora_in_folder(folder: Path, default_file: str, what: str, how_to_get: str) -> Path:
    for candidate in (folder / default_file, folder / Path(default_file).name):
        if candidate.is_file():
            return candidate
    found = sorted(folder.rglob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise WeightsNotFoundError(
            f"no .safetensors {what} file in {folder.resolve()}. To get it: {how_to_get}."
        )
    names = ", ".join(str(file.relative_to(folder)) for file in found)
    raise WeightsNotFoundError(
        f"{folder.resolve()} holds several .safetensors files ({names}) and no {default_file}; "
        f"pass the path of the {what} file itself."
    )


def resolve_seethrough_lora(source: str) -> Path:
    return resolve_lora_file(source, SEETHROUGH_LORA_FILE, "SeeThrough3D LoRA", LORA_HOW_TO_GET)


def resolve_style_lora(source: str) -> Path:
    how_to_get = (
        "download the LoRA (a FLUX.1 LoRA .safetensors file) and pass its path, or its cached repo id"
    )
    return resolve_lora_file(source, STYLE_LORA_FILE, "style LoRA", how_to_get)


@dataclass(frozen=True)
class WeightsFile:
    """Which weights were loaded: a label (the file's path, or what built them) and the file's hash."""

    label: str
    sha256: str | None  # the first SHA256_PREFIX hex digits; None when not read from a file

    @classmethod
    def of(cls, path: Path) -> WeightsFile:
        return cls(str(path), file_sha256(path)[:SHA256_PREFIX])


def file_sha256(path: Path, chunk_bytes: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
