#!/usr/bin/env python3
"""The PyTorch baseline `easel bench` is compared with: one evaluation of an SD 1.5-sized UNet (random
weights, batch 1, f32, and bf16 autocast) at 256² and 512², and a VAE decode at 512², on this machine.

Run: python bench/pytorch_unet.py [--runs 2]   (needs: pip install torch diffusers)
Prints JSON with the median seconds of the timed runs after one warm-up, and peak RSS.
"""
import argparse
import json
import resource

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from timing import median_secs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sizes", default="256,512")
    args = parser.parse_args()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        layers_per_block=2, norm_num_groups=32,
    ).eval()
    context = torch.randn(1, 77, 768)
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "unet": [], "unet_bf16": []}
    with torch.inference_mode():
        for size in [int(s) for s in args.sizes.split(",")]:
            x = torch.randn(1, 4, size // 8, size // 8)
            secs = median_secs(lambda: unet(x, 500, context), args.runs)
            report["unet"].append({"size": size, "secs_per_eval": secs})
            with torch.autocast("cpu", dtype=torch.bfloat16):
                secs = median_secs(lambda: unet(x, 500, context), args.runs)
            report["unet_bf16"].append({"size": size, "secs_per_eval": secs})
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        ).eval()
        size = max(int(s) for s in args.sizes.split(","))
        z = torch.randn(1, 4, size // 8, size // 8)
        report["vae_decode"] = {"size": size, "secs": median_secs(lambda: vae.decode(z), args.runs)}
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
