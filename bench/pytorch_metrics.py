#!/usr/bin/env python3
"""The PyTorch baseline for `easel bench --metrics`: pytorch-fid's feature extraction of a 512×512
picture (resize + FID Inception, random weights cost the same) and its FID on 2048-d statistics
(scipy sqrtm), on this machine.

Run: python bench/pytorch_metrics.py [--runs 3]   (needs: pip install torch torchvision pytorch-fid scipy)
"""
import argparse
import json

import numpy as np
import torch
import pytorch_fid.inception as pi
from pytorch_fid.fid_score import calculate_frechet_distance

from timing import median_secs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pi.load_state_dict_from_url = lambda *a, **k: None
    original = torch.nn.Module.load_state_dict
    torch.nn.Module.load_state_dict = lambda self, sd, *a, **k: None if sd is None else original(self, sd, *a, **k)
    model = pi.InceptionV3([3]).eval()
    x = torch.rand(1, 3, 512, 512)
    with torch.inference_mode():
        per_picture = median_secs(lambda: model(x), args.runs)
    feats = lambda off: np.array([[((i * 31 + d * 17) % 97) * 0.01 + off for d in range(2048)] for i in range(2100)])
    a, b = feats(0.0), feats(0.1)
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    fid_secs = median_secs(lambda: calculate_frechet_distance(mu1, s1, mu2, s2), args.runs)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "secs_per_picture": per_picture, "pictures_per_sec": 1 / per_picture, "fid_2048_secs": fid_secs},
                     indent=2))


if __name__ == "__main__":
    main()
