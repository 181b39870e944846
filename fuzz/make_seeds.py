#!/usr/bin/env python3
"""Seeds for the fuzzing targets: small, valid examples of every format (Python's standard
library only), written into fuzz/corpus/<target>/. libFuzzer mutates from these; the committed
fuzz/corpus.tar.gz is these seeds plus what `cargo fuzz cmin` kept from the runs recorded in the
README."""

import io
import json
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
FIXTURES = ROOT.parent / "tests" / "fixtures"


def put(target, name, data):
    folder = ROOT / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + blob


def f32(values):
    return struct.pack(f"<{len(values)}f", *values)


def npy(values, shape, descr="<f8"):
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    header = header.ljust(118) + "\n"
    fmt = "<" + ("d" if descr.endswith("8") else "f") * len(values)
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + struct.pack(fmt, *values)


def npz(arrays, compression):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, data in arrays.items():
            z.writestr(name + ".npy", data)
    return out.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(texts):
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x80" * 6 + b"\x00" + b"\x40" * 6)
    body = png_chunk(b"IHDR", ihdr)
    for kind, data in texts:
        body += png_chunk(kind, data)
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


A1111 = (
    "castle on a hill <lora:ink:0.8>, (masterpiece:1.2)\nNegative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
    'Model hash: 6ce0161689, Model: v1-5, Lora hashes: "ink: 0123456789ab", Version: v1.10.1'
)
COMFY = json.dumps({
    "3": {"class_type": "KSampler", "inputs": {"seed": 77, "steps": 30, "cfg": 6.5, "sampler_name": "dpmpp_2m",
          "scheduler": "karras", "denoise": 1.0, "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 384, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
})
EASEL = json.dumps({"request": {"prompt": "a cat", "steps": 12, "seed": 9, "loras": [
    {"name": "ink", "path": "ink.safetensors", "unet_weight": 0.5, "text_weight": 0.5}]}, "model": "tiny"})


def main():
    put("safetensors", "noise", (FIXTURES / "noise.safetensors").read_bytes())
    put("safetensors", "mixed", safetensors(
        {"a.weight": ("F32", [2, 2], f32([1, -2, 3, 0.5])), "b": ("F16", [2], b"\x00\x3c\x00\xc0"),
         "ids": ("I64", [1], struct.pack("<q", 7))}, {"format": "pt", "ss_network_dim": "4"}))
    put("safetensors", "lora", safetensors(
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": ("F32", [1, 4], f32([1, 2, 3, 4])),
         "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": ("F32", [4, 1], f32([1, 0, 0, 1])),
         "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": ("F32", [], f32([1]))},
        {"ss_base_model_version": "sd_v1", "modelspec.title": "Seed"}))

    for name in ("small", "evil"):
        put("pickle", name, (FIXTURES / f"{name}.ckpt").read_bytes())
    with zipfile.ZipFile(FIXTURES / "small.ckpt") as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
        put("pickle", "small-data.pkl", z.read(pkl))
    put("pickle", "ordered-dict", pickle.dumps(OrderedDict(a=[1, 2.5, "x"], b={"c": (None, True)}), protocol=2))
    put("pickle", "protocol5", pickle.dumps({"state_dict": {"w": b"\x00\x01", "n": 2**70}}, protocol=5))

    mu, sigma = npy([0.5, -1.0], [2]), npy([1.0, 0.0, 0.0, 2.0], [2, 2])
    put("npz", "stored", npz({"mu": mu, "sigma": sigma}, zipfile.ZIP_STORED))
    put("npz", "deflated", npz({"mu": mu, "sigma": sigma}, zipfile.ZIP_DEFLATED))
    put("npz", "float32", npz({"mu": npy([0.5], [1], "<f4"), "sigma": npy([1.0], [1, 1], "<f4")}, zipfile.ZIP_STORED))

    put("png_import", "a1111", png([(b"tEXt", b"parameters\x00" + A1111.encode())]))
    put("png_import", "easel", png([(b"iTXt", b"easel\x00\x01\x00\x00\x00" + zlib.compress(EASEL.encode())),
                                    (b"tEXt", b"parameters\x00" + A1111.encode())]))
    put("png_import", "comfy", png([(b"zTXt", b"prompt\x00\x00" + zlib.compress(COMFY.encode()))]))

    put("settings_text", "a1111", A1111.encode())
    put("settings_text", "all", b"\x00".join([A1111.encode(), COMFY.encode(), EASEL.encode()]))
    put("settings_text", "comfy", b"\x00" + COMFY.encode())

    cases = json.loads((FIXTURES / "tokenizer_cases.json").read_text())
    prompts = [c["prompt"] for c in cases][:12]
    for i, text in enumerate(prompts + ["a <lora:ink:0.8> b <lora:x:te=0:unet=2>, <lyco:y:0.5>", "<lora::>"]):
        put("prompt", str(i), text.encode())

    put("lora_keys", "empty", b"")
    put("lora_keys", "bytes", bytes(range(64)))


if __name__ == "__main__":
    main()
