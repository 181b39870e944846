#!/usr/bin/env python3
"""The PyTorch baseline `easel bench` is compared with: one evaluation of an SD 1.5-sized UNet (random
weights, batch 1, f32, and bf16 autocast) at 256² and 512², and a VAE and a TAESD decode at 512², on this
machine. With --family sdxl: SDXL base 1.0's UNet (context [1, 77, 2048], pooled [1, 1280], time ids
(s, s, 0, 0, s, s)) at 512² and 1024², and SDXL's VAE (SD 1.5's architecture) and a TAESD (TAESDXL's
architecture) decode at 1024².

With --controlnet: also one evaluation steered by a ControlNet (diffusers' ControlNetModel.from_unet, the
published hint widths) at the largest size — the ControlNet's pass and the UNet's with its residuals — beside
the plain one, the counterpart of `easel bench --controlnet`.

Run: python bench/pytorch_unet.py [--runs 2]   (needs: pip install torch diffusers)
     python bench/pytorch_unet.py --family sdxl [--sizes 512,1024] [--runs 2]   (f32 UNet: 10.3 GB)
     python bench/pytorch_unet.py --device cuda --dtype f16 [--family sdxl]   (the GPU baseline for
     `easel bench --device cuda --dtype f16`: weights and inputs in that dtype, no autocast)
Prints JSON with the median seconds of the timed runs after one warm-up, and peak RSS (on a GPU
also the peak memory PyTorch allocated there).
"""
import argparse
import json
import resource

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, UNet2DConditionModel

from timing import median_secs


# SDXL base 1.0's published unet/config.json (attention_head_dim is the head COUNT per level).
SDXL_UNET = dict(
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, layers_per_block=2, norm_num_groups=32,
)
SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    layers_per_block=2, norm_num_groups=32,
)
# SD 1.5's and SDXL's VAEs share the architecture; SDXL's only scales latents differently.
VAE = dict(
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
DEFAULT_SIZES = {"sd15": "256,512", "sdxl": "512,1024"}


def make_unet(family):
    return UNet2DConditionModel(**(SDXL_UNET if family == "sdxl" else SD15_UNET)).eval()


def make_vae(family):
    extra = {"scaling_factor": 0.13025} if family == "sdxl" else {}
    return AutoencoderKL(**VAE, **extra).eval()


def conditioning(family, device="cpu", dtype=torch.float32):
    """The UNet's context and, for SDXL, a function of the size giving its added_cond_kwargs: the pooled
    vector and the time ids (orig_h, orig_w, crop_top, crop_left, target_h, target_w) of a size² picture."""
    if family != "sdxl":
        return torch.randn(1, 77, 768, device=device, dtype=dtype), lambda size: None
    context = torch.randn(1, 77, 2048, device=device, dtype=dtype)
    pooled = torch.randn(1, 1280, device=device, dtype=dtype)
    return context, lambda size: {
        "text_embeds": pooled,
        "time_ids": torch.tensor([[size, size, 0, 0, size, size]], device=device, dtype=dtype),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--family", default="sd15", choices=["sd15", "sdxl"])
    parser.add_argument("--sizes", default=None, help="default 256,512 (sd15) or 512,1024 (sdxl)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    parser.add_argument("--controlnet", action="store_true", help="also time a step with one ControlNet unit")
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = DEFAULT_SIZES[args.family]
    if args.device != "cpu":
        return gpu(args)
    torch.manual_seed(0)
    unet = make_unet(args.family)
    report = {"torch": torch.__version__, "family": args.family, "threads": torch.get_num_threads(),
              "unet": [], "unet_bf16": []}
    context, added_for = conditioning(args.family)
    with torch.inference_mode():
        for size in [int(s) for s in args.sizes.split(",")]:
            x = torch.randn(1, 4, size // 8, size // 8)
            added = added_for(size)
            secs = median_secs(lambda: unet(x, 500, context, added_cond_kwargs=added), args.runs)
            report["unet"].append({"size": size, "secs_per_eval": secs})
            with torch.autocast("cpu", dtype=torch.bfloat16):
                secs = median_secs(lambda: unet(x, 500, context, added_cond_kwargs=added), args.runs)
            report["unet_bf16"].append({"size": size, "secs_per_eval": secs})
        if args.controlnet:
            report["controlnet"] = controlnet_row(unet, context, added_for, args)
        del unet
        vae = make_vae(args.family)
        size = max(int(s) for s in args.sizes.split(","))
        z = torch.randn(1, 4, size // 8, size // 8)
        report["vae_decode"] = {"size": size, "secs": median_secs(lambda: vae.decode(z), args.runs)}
        # TAESD, the tiny preview decoder (`easel bench --preview`), f32 and bf16 autocast. TAESDXL has the
        # same architecture (other weights), so the sdxl rows time it too.
        tiny = AutoencoderTiny().eval()
        report["preview_decode"] = {"size": size, "secs": median_secs(lambda: tiny.decode(z), args.runs)}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            secs = median_secs(lambda: tiny.decode(z), args.runs)
        report["preview_decode_bf16"] = {"size": size, "secs": secs}
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(report, indent=2))


def controlnet_row(unet, context, added_for, args):
    """One UNet evaluation with and without a ControlNet unit's residuals at the largest size."""
    size = max(int(s) for s in args.sizes.split(","))
    net = ControlNetModel.from_unet(unet).eval()
    x = torch.randn(1, 4, size // 8, size // 8)
    hint = torch.rand(1, 3, size, size)
    added = added_for(size)

    def steered():
        down, mid = net(x, 500, context, hint, added_cond_kwargs=added, return_dict=False)
        unet(x, 500, context, added_cond_kwargs=added, down_block_additional_residuals=down,
             mid_block_additional_residual=mid)

    plain = median_secs(lambda: unet(x, 500, context, added_cond_kwargs=added), args.runs)
    with_unit = median_secs(steered, args.runs)
    return {"size": size, "secs_per_eval_plain": plain, "secs_per_eval_with_unit": with_unit,
            "ratio": with_unit / plain}


def gpu(args):
    """The same models on a GPU, stored and computed in `args.dtype`, timed with a synchronise."""
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    dev = torch.device(args.device)
    torch.manual_seed(0)
    unet = make_unet(args.family).to(dev, dtype)
    vae = make_vae(args.family).to(dev, dtype)
    context, added_for = conditioning(args.family, dev, dtype)

    def synced(fn):
        def run():
            fn()
            torch.cuda.synchronize(dev)
        return run

    report = {"torch": torch.__version__, "family": args.family, "device": torch.cuda.get_device_name(dev),
              "dtype": args.dtype, "unet": []}
    sizes = [int(s) for s in args.sizes.split(",")]
    with torch.inference_mode():
        for size in sizes:
            x = torch.randn(1, 4, size // 8, size // 8, device=dev, dtype=dtype)
            added = added_for(size)
            secs = median_secs(synced(lambda: unet(x, 500, context, added_cond_kwargs=added)), args.runs)
            report["unet"].append({"size": size, "secs_per_eval": secs})
        z = torch.randn(1, 4, max(sizes) // 8, max(sizes) // 8, device=dev, dtype=dtype)
        report["vae_decode"] = {"size": max(sizes), "secs": median_secs(synced(lambda: vae.decode(z)), args.runs)}
    report["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(dev)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
