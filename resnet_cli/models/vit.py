"""Vision Transformers (ViT), written from scratch in torchvision's grammar.

Module and parameter names follow ``torchvision.models.vision_transformer`` exactly (``conv_proj``,
``class_token``, ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_{i}.{ln_1, self_attention, ln_2,
mlp}``, ``encoder.ln``, ``heads.head``), so state dicts move between this project and torchvision with
``strict=True``; the initialisation is torchvision's too, drawn in the same order. Attention goes through
``F.scaled_dot_product_attention`` (fused kernels where the device has them) instead of
``nn.MultiheadAttention``, whose parameter names :class:`SelfAttention` keeps.

References:
    Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (arXiv:2010.11929).
    Touvron et al., "Training data-efficient image transformers", ICML 2021 (arXiv:2012.12877): the Ti/S
    sizes and stochastic depth rising linearly over the blocks.
    Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016 (arXiv:1603.09382).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.vision_transformer import interpolate_embeddings
from torchvision.ops import StochasticDepth

#: torchvision's (and the paper's) LayerNorm: eps 1e-6, not PyTorch's default 1e-5.
LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names and initialisation.

    The query, key and value projections are one packed ``in_proj_weight`` (``3 * dim`` rows) and
    ``in_proj_bias``; ``out_proj`` is a Linear. Batch first: ``(batch, tokens, dim)``.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        # nn.MultiheadAttention._reset_parameters, in its order (out_proj keeps Linear's default weight).
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, tokens, dim = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # (n, tokens, 3 * dim) -> 3 x (n, heads, tokens, head_dim)
        q, k, v = qkv.view(n, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        result: Tensor = self.out_proj(out.transpose(1, 2).reshape(n, tokens, dim))
        return result


class MLPBlock(nn.Sequential):
    """Linear, GELU, dropout, Linear, dropout: keys ``mlp.0`` and ``mlp.3`` as torchvision's ``MLPBlock``."""

    def __init__(self, in_dim: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(in_dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, in_dim), nn.Dropout(dropout)
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-6)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attention(ln_1(x))``, then ``x + mlp(ln_2(x))``.

    ``drop_path`` drops each residual branch for a whole sample at that rate while training (stochastic depth);
    it has no parameters, so the keys stay torchvision's.
    """

    def __init__(
        self,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = LayerNorm6,
    ) -> None:
        super().__init__()
        self.ln_1 = norm_layer(hidden_dim)
        self.self_attention = SelfAttention(hidden_dim, num_heads, attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = norm_layer(hidden_dim)
        self.mlp = MLPBlock(hidden_dim, mlp_dim, dropout)
        self.drop_path: nn.Module = StochasticDepth(drop_path, "row") if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.dropout(self.self_attention(self.ln_1(x))))
        result: Tensor = x + self.drop_path(self.mlp(self.ln_2(x)))
        return result


class Encoder(nn.Module):
    """Learned position embeddings, then the blocks, then a final LayerNorm."""

    def __init__(
        self,
        seq_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = LayerNorm6,
    ) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))  # as BERT
        self.dropout = nn.Dropout(dropout)
        # Stochastic depth rises linearly from 0 (first block) to drop_path (last), as DeiT and timm.
        rates = [drop_path * i / max(num_layers - 1, 1) for i in range(num_layers)]
        blocks = OrderedDict(
            (
                f"encoder_layer_{i}",
                EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout, attention_dropout, p, norm_layer),
            )
            for i, p in enumerate(rates)
        )
        self.layers = nn.Sequential(blocks)  # type: ignore[arg-type]  # an OrderedDict of Modules
        self.ln = norm_layer(hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.ln(self.layers(self.dropout(x + self.pos_embedding)))
        return result


class VisionTransformer(nn.Module):
    """A Vision Transformer for image classification (class token, learned position embeddings, linear head).

    Args:
        image_size: input side in pixels; fixed, since the position embeddings have one entry per patch (see
            :func:`resize_pos_embedding` to move weights to another size).
        patch_size: side of the square patches; must divide ``image_size``.
        num_layers: encoder blocks.
        num_heads: attention heads; must divide ``hidden_dim``.
        hidden_dim: token width.
        mlp_dim: hidden width of each block's MLP.
        num_classes: size of the classifier's output.
        in_channels: channels of the input images (1 for greyscale, 3 for RGB); only ``conv_proj``'s weight
            shape changes.
        dropout: dropout after the position embeddings, the attention output and in the MLPs.
        attention_dropout: dropout on the attention weights.
        drop_path: stochastic depth rate of the last block (rising linearly from 0 at the first), applied to
            both residual branches of each block; uses torch's global RNG, in training mode only.

    Raises:
        ValueError: ``patch_size`` does not divide ``image_size`` or ``num_heads`` does not divide ``hidden_dim``.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size <= 0 or patch_size <= 0 or image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a positive multiple of patch_size {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.conv_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
        seq_length = (image_size // patch_size) ** 2 + 1  # patches and the class token
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.encoder = Encoder(
            seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout, drop_path
        )
        self.seq_length = seq_length
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))

        # The patchify stem: truncated normal scaled by its fan-in; the head starts at zero (torchvision, as
        # the paper's fine-tuning recipe), so the first logits are all equal.
        fan_in = in_channels * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        if self.conv_proj.bias is not None:
            nn.init.zeros_(self.conv_proj.bias)
        head = self.heads.head
        assert isinstance(head, nn.Linear)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)

    def _process_input(self, x: Tensor) -> Tensor:
        """``(n, c, h, w)`` images -> ``(n, patches, hidden_dim)`` tokens, row-major over the patch grid."""
        if not torch.jit.is_tracing() and x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"this ViT takes {self.image_size}x{self.image_size} px images, got {tuple(x.shape[-2:])}")
        tokens: Tensor = self.conv_proj(x).flatten(2).transpose(1, 2)
        return tokens

    def forward_features(self, x: Tensor) -> Tensor:
        """The class token's features after the encoder's final LayerNorm."""
        x = self._process_input(x)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        result: Tensor = self.encoder(x)[:, 0]
        return result

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.heads(self.forward_features(x))
        return logits


def resize_pos_embedding(state_dict: Mapping[str, Tensor], image_size: int, patch_size: int) -> dict[str, Tensor]:
    """A copy of a ViT ``state_dict`` whose position embeddings fit ``image_size`` (bicubic, the class token's kept).

    For loading weights trained at another image size; torchvision's ``interpolate_embeddings`` does the work.
    The input is not modified.
    """
    resized = interpolate_embeddings(image_size, patch_size, OrderedDict(state_dict))
    return dict(resized)
