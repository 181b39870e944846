#!/usr/bin/env python3
"""Writes a full-size SDXL base 1.0 single file with random weights, fp16, in the original (sgm /
A1111) layout most SDXL downloads use, for measuring what loading and generating SDXL costs in time
and memory with a real-sized file — random weights cost exactly what trained ones do.

Run: python bench/make_sdxl_random.py OUT.safetensors   (needs: pip install torch diffusers transformers
     safetensors)
Then e.g.: /usr/bin/time -v easel generate --model OUT.safetensors --dtype f16 --steps 2 --width 1024
     --height 1024 ...
Writes 6.94 GB (2514 tensors, 3.47 B parameters). Peak memory 10.3 GiB, the UNet built in f32 before it is
halved (`/usr/bin/time -v`: 10 831 276 KiB); 1.5 minutes on 2 cores (torch 2.15, safetensors' save_file
writes without a second copy of the tensors).

What the file holds, each part with SDXL base 1.0's published config and seeded random weights
(torch.manual_seed(0); the libraries' default init, so norms are ones and zeros):
  model.diffusion_model.*                        the UNet (2.57 B parameters): channels (320, 640, 1280),
                                                 transformer depth (1, 2, 10), 64-wide heads, context 2048,
                                                 label_emb = the text/time embedding (2816 -> 1280)
  first_stage_model.*                            the VAE (84 M), CompVis layout, as SD 1.5's (scaling 0.13025
                                                 is SDXL's, but a single file carries no config)
  conditioner.embedders.0.transformer.text_model.*   CLIP ViT-L (123 M): 768 wide, 12 layers, quick_gelu
  conditioner.embedders.1.model.*                OpenCLIP bigG (695 M): 1280 wide, 32 layers, 20 heads, gelu,
                                                 fused attn.in_proj, text_projection stored as `x @ W` (the
                                                 transformers Linear's weight transposed), logit_scale
The names come from the converters tests/fixtures/make_sdxl_fixtures.py writes tiny-sdxl.safetensors with,
and each part is read back with diffusers' own single-file converters before it is kept.
Parts are built one at a time and halved at once, largest first, to keep the peak down.
"""
import resource
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
from make_fixtures import vae_to_ldm  # noqa: E402
from make_sdxl_fixtures import SGM_TE2, te1_to_sgm, te2_to_sgm, unet_to_sgm  # noqa: E402

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (attention_head_dim is diffusers' name for the
# head COUNT per level: 64-wide heads everywhere).
UNET_CONFIG = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # pooled 1280 + 6 time ids x 256
    norm_num_groups=32,
)
# vae/config.json (as SD 1.5's VAE; scaling_factor 0.13025).
VAE_CONFIG = dict(
    sample_size=1024,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.13025,
    force_upcast=True,
)
# text_encoder/config.json (CLIP ViT-L/14's text tower).
TE1_CONFIG = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
# text_encoder_2/config.json (OpenCLIP ViT-bigG/14's text tower).
TE2_CONFIG = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)


def same(got, want, what):
    """diffusers' converter read the sgm names back to the model's own tensors."""
    assert set(got) == set(want), (what, sorted(set(got) ^ set(want))[:10])
    for k, v in want.items():
        assert torch.equal(got[k].reshape(v.shape), v), (what, k)


def params(sd):
    return sum(v.numel() for v in sd.values())


def unet_part():
    unet = UNet2DConditionModel(**UNET_CONFIG).half()
    sd = unet.state_dict()
    out = unet_to_sgm(sd, UNET_CONFIG["layers_per_block"], len(UNET_CONFIG["block_out_channels"]))
    same(convert_ldm_unet_checkpoint(out, dict(unet.config)), sd, "unet")
    return out


def te2_part():
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**TE2_CONFIG)).half()
    out = te2_to_sgm(te2)
    same(convert_open_clip_checkpoint(te2, out, prefix=SGM_TE2), te2.state_dict(), "text_encoder_2")
    return out


def te1_part():
    te1 = CLIPTextModel(CLIPTextConfig(**TE1_CONFIG)).half()
    sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in te1.state_dict().items()}
    out = te1_to_sgm(sd)
    same(convert_ldm_clip_checkpoint(out), sd, "text_encoder")
    return out


def vae_part():
    vae = AutoencoderKL(**VAE_CONFIG).half()
    sd = vae.state_dict()
    out = vae_to_ldm(sd, len(VAE_CONFIG["block_out_channels"]))
    same(convert_ldm_vae_checkpoint(out, dict(vae.config)), sd, "vae")
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_path = Path(sys.argv[1])
    start = time.perf_counter()
    torch.manual_seed(0)
    tensors = {}
    with torch.no_grad():
        for name, build in (("unet", unet_part), ("text_encoder_2", te2_part), ("text_encoder", te1_part),
                            ("vae", vae_part)):
            t = time.perf_counter()
            part = build()
            tensors.update(part)
            print(f"{name}: {len(part)} tensors, {params(part) / 1e6:.1f} M parameters, "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
    # Everything is fp16 already but logit_scale (a float32 scalar, stored fp16 like the rest).
    tensors = {k: v.to(torch.float16).contiguous() for k, v in tensors.items()}
    t = time.perf_counter()
    save_file(tensors, out_path, metadata={"format": "pt"})
    size = out_path.stat().st_size
    print(f"wrote {out_path}: {len(tensors)} tensors, {params(tensors) / 1e9:.3f} B parameters, "
          f"{size:,} bytes ({size / 1e9:.2f} GB); save {time.perf_counter() - t:.1f} s, "
          f"total {time.perf_counter() - start:.1f} s, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
