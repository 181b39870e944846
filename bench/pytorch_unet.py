#!/usr/bin/env python3
"""The PyTorch baseline `easel bench` is compared with: one evaluation of an SD 1.5-sized UNet (random
weights, batch 1, f32, and bf16 autocast) at 256² and 512², and a VAE and a TAESD decode at 512², on this
machine.

Run: python bench/pytorch_unet.py [--runs 2]   (needs: pip install torch diffusers)
     python bench/pytorch_unet.py --device cuda --dtype f16   (the GPU baseline for
     `easel bench --device cuda --dtype f16`: weights and inputs in that dtype, no autocast)
Prints JSON with the median seconds of the timed runs after one warm-up, and peak RSS (on a GPU
also the peak memory PyTorch allocated there).
"""
import argparse
import json
import resource

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

from timing import median_secs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    args = parser.parse_args()
    if args.device != "cpu":
        return gpu(args)
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
        # TAESD, the tiny preview decoder (`easel bench --preview`), f32 and bf16 autocast.
        tiny = AutoencoderTiny().eval()
        report["preview_decode"] = {"size": size, "secs": median_secs(lambda: tiny.decode(z), args.runs)}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            secs = median_secs(lambda: tiny.decode(z), args.runs)
        report["preview_decode_bf16"] = {"size": size, "secs": secs}
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(report, indent=2))


def gpu(args):
    """The same models on a GPU, stored and computed in `args.dtype`, timed with a synchronise."""
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    dev = torch.device(args.device)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        layers_per_block=2, norm_num_groups=32,
    ).eval().to(dev, dtype)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ).eval().to(dev, dtype)
    context = torch.randn(1, 77, 768, device=dev, dtype=dtype)

    def synced(fn):
        def run():
            fn()
            torch.cuda.synchronize(dev)
        return run

    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(dev), "dtype": args.dtype,
              "unet": []}
    sizes = [int(s) for s in args.sizes.split(",")]
    with torch.inference_mode():
        for size in sizes:
            x = torch.randn(1, 4, size // 8, size // 8, device=dev, dtype=dtype)
            secs = median_secs(synced(lambda: unet(x, 500, context)), args.runs)
            report["unet"].append({"size": size, "secs_per_eval": secs})
        z = torch.randn(1, 4, max(sizes) // 8, max(sizes) // 8, device=dev, dtype=dtype)
        report["vae_decode"] = {"size": max(sizes), "secs": median_secs(synced(lambda: vae.decode(z)), args.runs)}
    report["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(dev)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
