#!/usr/bin/env python3
"""Loads weights exported by `cifar10 --export` into a PyTorch PiNet and
evaluates them on the CIFAR-10 test set, as a check of the export format.

    python3 examples/load_in_pytorch.py pinet.safetensors path/to/cifar-10-batches-bin

Needs torch, numpy and safetensors. Prints the test accuracy, which should
match the `test_accuracy=` line of the run that exported the weights (up to
float rounding in a few borderline images).
"""
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class PiNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(4096, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.max_pool2d(F.relu(self.conv4(F.relu(self.conv3(x)))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def load(folder, names):
    recs = np.concatenate(
        [np.fromfile(f"{folder}/{n}", dtype=np.uint8).reshape(-1, 3073) for n in names]
    )
    x = torch.from_numpy(np.ascontiguousarray(recs[:, 1:]).reshape(-1, 3, 32, 32))
    return x, torch.from_numpy(recs[:, 0].astype(np.int64))


def main():
    weights, folder = sys.argv[1], sys.argv[2]
    model = PiNet()
    model.load_state_dict(load_file(weights))
    model.eval()
    xtr, _ = load(folder, [f"data_batch_{i}.bin" for i in range(1, 6)])
    xte, yte = load(folder, ["test_batch.bin"])
    # The trainer's normalisation: per-channel mean/std of the training set.
    xf = xtr.double().div(255.0)
    mean = xf.mean(dim=(0, 2, 3)).float().view(1, 3, 1, 1)
    std = xf.std(dim=(0, 2, 3), unbiased=False).float().view(1, 3, 1, 1)
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(xte), 1000):
            x = (xte[i : i + 1000].float() / 255.0 - mean) / std
            correct += (model(x).argmax(1) == yte[i : i + 1000]).sum().item()
    print(f"pytorch_test_accuracy={correct / len(xte):.4f}")


if __name__ == "__main__":
    main()
