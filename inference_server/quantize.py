"""Weight quantization of the FLUX transformer for the 24-GB mode: fp8 (torchao) or NF4 (bitsandbytes).

Both libraries are optional extras (``pip install 'seethrough[fp8]'`` / ``'seethrough[nf4]'``) and are
imported only when a quantized mode is asked for, with an error naming the extra when one is missing.

Only the linear layers inside the repeated blocks are quantized (over 99% of the 11.9 B weights); the
embedders, the final norm and projection stay in the compute dtype: they are small, sensitive, and the
pipeline reads its compute dtype from ``x_embedder``. Layers are converted one at a time as they move to
the device, so a bf16 transformer that would not fit on a 24 GB card never has to be on it whole.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import nn

from seethrough_core.vocabulary import QUANTIZATIONS

from .model_errors import SetupError

QUANTIZED_PREFIXES = ("transformer_blocks.", "single_transformer_blocks.")
# What each kind needs: (module to import, the pip extra that installs it, the hardware it runs on)
_BACKENDS = {
    "fp8": ("torchao", "fp8", "an NVIDIA GPU of compute capability 8.9 or newer (RTX 40xx, L4, H100)"),
    "nf4": ("bitsandbytes", "nf4", "any CUDA GPU"),
}
FP8_MIN_CAPABILITY = (8, 9)  # fp8 matrix multiplies: Ada and Hopper onwards


def require_backend(kind: str) -> ModuleType:
    """Import the library ``kind`` needs, or raise SetupError saying which extra to install."""
    module, extra, hardware = _BACKENDS[kind]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise SetupError(
            f"{kind} quantization needs the optional package '{module}', which is not installed: run "
            f"pip install 'seethrough[{extra}]' (it runs on {hardware})"
        ) from error


def auto_quantization(device: torch.device) -> str:
    """fp8 where the GPU multiplies in fp8 natively (faster and closer to bf16 than NF4), else NF4."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_MIN_CAPABILITY:
        return "fp8"
    return "nf4"


def _quantized_linears(transformer: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [
        (name, module)
        for name, module in transformer.named_modules()
        if isinstance(module, nn.Linear) and name.startswith(QUANTIZED_PREFIXES)
    ]


def is_quantized(transformer: nn.Module) -> bool:
    """True when the block linears already hold quantized weights (a second call must not redo it)."""
    return getattr(transformer, "_seethrough_quantization", None) is not None


def quantize_transformer(
    transformer: nn.Module, kind: str, device: torch.device, compute_dtype: torch.dtype
) -> None:
    """In place: quantize the block linears with ``kind`` and move the whole transformer to ``device``."""
    if kind not in QUANTIZATIONS:
        raise SetupError(f"quantization must be one of {QUANTIZATIONS}, got '{kind}'")
    if is_quantized(transformer):
        transformer.to(device)
        return
    if kind == "fp8":
        _to_fp8(transformer, device)
    else:
        _to_nf4(transformer, device, compute_dtype)
    transformer.to(device)  # the unquantized rest: embedders, norms, final projection
    transformer._seethrough_quantization = kind


def _to_fp8(transformer: nn.Module, device: torch.device) -> None:
    """Row-wise fp8 weights and dynamically quantized fp8 activations (torchao)."""
    require_backend("fp8")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    quantize_(
        transformer,
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
        filter_fn=lambda module, name: isinstance(module, nn.Linear) and name.startswith(QUANTIZED_PREFIXES),
        device=device,  # torchao moves each matching layer to the device just before converting it
    )


def _to_nf4(transformer: nn.Module, device: torch.device, compute_dtype: torch.dtype) -> None:
    """NF4 weights with ``compute_dtype`` matmuls (bitsandbytes); each layer quantizes as it moves."""
    bnb = require_backend("nf4")
    for name, linear in _quantized_linears(transformer):
        quantized = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=compute_dtype,
            quant_type="nf4",
            device="meta",  # no throw-away allocation: the weights are assigned right below
        )
        quantized.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        quantized.train(linear.training)  # a new module starts in training mode; bnb's kernels differ by mode
        parent_name, _, child = name.rpartition(".")
        setattr(transformer.get_submodule(parent_name), child, quantized.to(device))  # quantizes here
