"""The safetensors export format: the tensors with torchvision's keys, and string metadata that carries
everything ``eval`` and ``predict`` need (read back by :func:`resnet_cli.io.weights.load_weights`).

The file loads with ``strict=True`` into ``torchvision.models.resnetNN(num_classes=K)`` (after the same stem
change when the small-input stem was used), or into ``torchvision.models.VisionTransformer`` built with the
ViT's image size, patch, width, depth and heads (with a one-channel ``conv_proj`` for greyscale). Writing it,
and ONNX/TorchScript exports, is :func:`resnet_cli.engine.export.export`.
"""

from __future__ import annotations

import json

import torch

from resnet_cli import __version__
from resnet_cli.errors import ConfigError
from resnet_cli.io.checkpoint import non_finite_tensors
from resnet_cli.io.weights import SAFETENSORS_FORMAT, LoadedWeights
from resnet_cli.models import depth_of, family_of

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def safetensors_metadata(weights: LoadedWeights, dtype: str) -> dict[str, str]:
    """The string metadata of an export: JSON entries for the tool, flat ones for people and other tools (ONNX
    and TorchScript exports carry the same)."""
    cfg, pre = weights.model_config, weights.preprocess
    family = family_of(cfg.arch)
    return {
        "format": SAFETENSORS_FORMAT,
        "arch": cfg.arch,
        "family": family,
        **({"depth": str(depth_of(cfg.arch))} if family == "resnet" else {}),
        "num_classes": str(cfg.num_classes),
        "in_channels": str(cfg.in_channels),
        "small_input": json.dumps(cfg.small_input),
        "classes": json.dumps(weights.classes, ensure_ascii=False),
        "image_size": str(pre.image_size),
        "mean": json.dumps(list(pre.mean)),
        "std": json.dumps(list(pre.std)),
        "model": json.dumps(cfg.to_dict()),
        "preprocess": json.dumps(pre.to_dict()),
        "precision": weights.precision,
        "batch_size": str(weights.batch_size),
        "dtype": dtype,
        "resnet_cli_version": __version__,
        "source": weights.source.name,
        "source_sha256": weights.sha256,
        "ema": json.dumps(weights.ema),
    }


def safetensors_bytes(weights: LoadedWeights, dtype: str = "fp32") -> tuple[bytes, dict[str, str]]:
    """The safetensors file of ``weights`` in ``dtype`` (a key of :data:`DTYPES`), byte-identical for the same
    weights, and its metadata.

    Raises:
        ConfigError: a weight becomes infinite in ``dtype``.
    """
    from safetensors.torch import save

    target = DTYPES[dtype]
    state = {
        k: (v.to(target) if v.is_floating_point() else v).contiguous().clone() for k, v in weights.state_dict.items()
    }
    overflow = non_finite_tensors(state)
    if overflow:
        raise ConfigError(
            f"the weights of {weights.source} do not fit {dtype} ({overflow[0]} becomes infinite): "
            "use --dtype bf16 or fp32"
        )
    metadata = safetensors_metadata(weights, dtype)
    return _sorted_header(save(state, metadata=metadata)), metadata


def _sorted_header(payload: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted: safetensors writes them in hash order, so the
    same weights would otherwise give a different file (and SHA-256) on every export."""
    length = int.from_bytes(payload[:8], "little")
    header = json.dumps(json.loads(payload[8 : 8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads the header with spaces to keep tensors 8-byte aligned
    return len(header).to_bytes(8, "little") + header + payload[8 + length :]
