"""The image encoder: timm's VisionTransformer with BLIP's choices (pre-norm, [CLS] token, LN eps 1e-6).

The [CLS] output is the global image feature; all tokens feed the text transformer's cross-attention.
Position embeddings are resampled (bicubic) whenever the resolution changes, e.g. 224 px pre-training
-> 384 px fine-tuning, or when loading weights trained at another size.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from blip.config import VisionArch
from blip.models.weights import load_checked


def create_vit(arch: VisionArch, image_size: int, ln_eps: float = 1e-6) -> VisionTransformer:
    """A ViT without classifier head; `forward_features` returns (B, 1 + patches, width)."""
    if image_size % arch.patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {arch.patch_size}")
    return VisionTransformer(
        img_size=image_size, patch_size=arch.patch_size, embed_dim=arch.width, depth=arch.depth,
        num_heads=arch.heads, mlp_ratio=arch.mlp_ratio, qkv_bias=True, num_classes=0, global_pool="token",
        drop_path_rate=arch.drop_path, norm_layer=partial(nn.LayerNorm, eps=ln_eps))


def resample_pos_embed(pos_embed: torch.Tensor, vit: VisionTransformer) -> torch.Tensor:
    """Fit a (1, 1 + g*g, D) position embedding to `vit`'s patch grid (no-op when it already fits)."""
    if pos_embed.shape == vit.pos_embed.shape:
        return pos_embed
    return resample_abs_pos_embed(pos_embed, new_size=list(vit.patch_embed.grid_size), num_prefix_tokens=1)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state.get("state_dict", state))


def imagenet_weights_path(source: str) -> Path:
    """A local file, or a timm model already in the Hugging Face cache ('timm/<name>'); never downloads."""
    if Path(source).is_file():
        return Path(source)
    from huggingface_hub import try_to_load_from_cache

    repo = source if source.startswith("timm/") else f"timm/{source}"
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    raise FileNotFoundError(f"ViT weights '{source}': not a file and not in the Hugging Face cache as {repo}; "
                            "nothing is downloaded at run time")


def load_imagenet_weights(vit: VisionTransformer, source: str) -> None:
    """Initialise from ImageNet-trained timm weights (classifier dropped, position embedding resampled)."""
    state = {k: v for k, v in _read_state(imagenet_weights_path(source)).items()
             if not k.startswith(("head.", "fc_norm.", "head_drop."))}
    state["pos_embed"] = resample_pos_embed(state["pos_embed"], vit)
    load_checked(vit, state, source)


def set_grad_checkpointing(vit: VisionTransformer, enable: bool = True) -> None:
    """Recompute each block's activations in backward: memory for compute."""
    vit.set_grad_checkpointing(enable)


def set_fused_attention(module: nn.Module, enable: bool) -> None:
    """timm's attention layers under `module`: torch's fused kernel (timm's default) or plain matmul-softmax-matmul."""
    for m in module.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = enable
