#!/usr/bin/env python3
"""Writes a full-size Stable Diffusion 1.5 diffusers folder with random weights, stored as the fp16
variant (as most downloads are), for measuring what loading and generating costs in time and memory
with real files — random weights cost exactly what trained ones do.

Run: python bench/make_sd15_random.py OUT   (needs: pip install torch diffusers transformers)
Then e.g.: /usr/bin/time -v easel generate --model OUT --dtype f16 --steps 2 --width 512 --height 512 ...
Writes about 2.1 GB.
"""
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
from make_fixtures import write_pipeline_files  # noqa: E402


def main():
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        layers_per_block=2, norm_num_groups=32, sample_size=64,
    )
    unet.half().save_pretrained(out / "unet", variant="fp16")
    del unet
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )
    vae.half().save_pretrained(out / "vae", variant="fp16")
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    ))
    text.half().save_pretrained(out / "text_encoder", variant="fp16")
    write_pipeline_files(out, out / "tokenizer")


if __name__ == "__main__":
    main()
