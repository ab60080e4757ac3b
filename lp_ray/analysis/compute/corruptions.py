"""Corrupted test sets for the robustness analysis (the paper's out-of-distribution claim): for MNIST-1D,
families generated here at 5 severities (seeded, and stored with the run so a rerun scores the same
examples); for CIFAR-10/100, the CIFAR-10-C / CIFAR-100-C archives (Hendrycks & Dietterich 2019) when
they are on disk. Severity 0 is the clean test set, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lp_ray.errors import LpRayError

SEVERITIES = (1, 2, 3, 4, 5)


def _noise(x, s, gen):
    return x + 0.1 * s * torch.randn(x.shape, generator=gen)


def _shift(x, s, gen):
    # every example moved s positions, left or right at random (zeros flow in)
    out = torch.zeros_like(x)
    left = torch.rand(len(x), generator=gen) < 0.5
    out[left, : x.shape[1] - s] = x[left, s:]
    out[~left, s:] = x[~left, : x.shape[1] - s]
    return out


def _scale(x, s, gen):
    # amplitude times 1 + 0.15 s or its inverse, at random per example
    up = torch.rand(len(x), 1, generator=gen) < 0.5
    f = 1 + 0.15 * s
    return torch.where(up, x * f, x / f)


def _blur(x, s, gen):
    k = 2 * s + 1  # a moving average over 3..11 positions
    kernel = torch.full((1, 1, k), 1.0 / k)
    return torch.nn.functional.conv1d(x.unsqueeze(1), kernel, padding=s).squeeze(1)


def _dropout(x, s, gen):
    # 5 s % of the positions of every example set to zero (a sensor that misses samples)
    keep = torch.rand(x.shape, generator=gen) >= 0.05 * s
    return x * keep


# The one list of MNIST-1D corruption families: name -> (clean batch, severity, generator) -> corrupted.
MNIST1D_FAMILIES: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _noise,
    "shift": _shift,
    "scale": _scale,
    "blur": _blur,
    "dropout": _dropout,
}


def corrupt_mnist1d(x: torch.Tensor, family: str, severity: int, seed: int) -> torch.Tensor:
    """The test inputs `x` (examples x positions) under one family at one severity; severity 0 returns
    `x` itself. Seeded by (seed, family, severity), so every run of the analysis builds the same set."""
    if severity == 0:
        return x
    if family not in MNIST1D_FAMILIES or severity not in SEVERITIES:
        raise ValueError(f"unknown corruption {family!r} at severity {severity}")
    index = list(MNIST1D_FAMILIES).index(family)
    gen = torch.Generator().manual_seed(seed * 1009 + index * 10 + severity)
    return MNIST1D_FAMILIES[family](x.clone(), severity, gen).to(x.dtype)


# CIFAR-10-C / CIFAR-100-C: one <corruption>.npy per corruption, N x 32 x 32 x 3 uint8, the 10,000 test
# images at severity 1, then at 2, ... 5; labels.npy beside them (int, 5 x 10,000).
CIFAR_C_SOURCES = {
    "cifar10": ("CIFAR-10-C", "https://zenodo.org/record/2535967"),
    "cifar100": ("CIFAR-100-C", "https://zenodo.org/record/3555552"),
}


def cifar_c_folder(path: str | None, dataset: str) -> Path:
    name, url = CIFAR_C_SOURCES[dataset]
    if path is None:
        raise LpRayError(f"no {name} folder given: download {name}.tar from {url}, unpack it, pass --corruptions DIR")
    folder = Path(path).expanduser()
    if not (folder / "labels.npy").is_file():
        raise LpRayError(f"{folder}: not a {name} folder (no labels.npy); download {name}.tar from {url} and unpack it")
    return folder


def _npy(path: Path) -> np.ndarray:
    try:  # .npy, never pickle: allow_pickle=False refuses object arrays
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise LpRayError(f"{path}: unreadable .npy file ({str(e).splitlines()[0]})") from None


def read_cifar_c(folder: Path, test_size: int) -> tuple[list[str], np.ndarray, Callable[[str, int], np.ndarray]]:
    """The corruptions present in `folder`, the labels of one severity, and a reader of one corruption at
    one severity (uint8 NCHW). Each file must hold 5 severities of the `test_size` test images."""
    labels = _npy(folder / "labels.npy")
    if labels.shape != (5 * test_size,):
        raise LpRayError(f"{folder / 'labels.npy'}: expected {5 * test_size} labels (5 severities), got {labels.shape}")
    names = sorted(p.stem for p in folder.glob("*.npy") if p.stem != "labels")
    if not names:
        raise LpRayError(f"{folder}: no corruption files (<name>.npy) beside labels.npy")

    def images(name: str, severity: int) -> np.ndarray:
        x = _npy(folder / f"{name}.npy")
        if x.shape != (5 * test_size, 32, 32, 3) or x.dtype != np.uint8:
            raise LpRayError(
                f"{folder / name}.npy: expected {5 * test_size}x32x32x3 uint8 images, got {x.shape} {x.dtype}"
            )
        part = x[(severity - 1) * test_size : severity * test_size]
        return np.ascontiguousarray(part.transpose(0, 3, 1, 2))

    return names, labels[:test_size].astype(np.int64), images


def mean_corruption_summary(rows: list[dict]) -> list[dict]:
    """Per network and round: clean accuracy and mean corruption accuracy (over every corruption and
    severity 1-5, as CIFAR-C is usually reported), with the network's sha256 when the rows carry it."""
    import math

    out = []
    for network, r in sorted({(x["network"], x["round"]) for x in rows}, key=lambda k: (k[0] != "LT", k)):
        mine = [x for x in rows if (x["network"], x["round"]) == (network, r)]
        out.append(
            {
                "network": network,
                "round": r,
                "density": mine[0]["density"],
                "clean_test_acc": mine[0]["clean_test_acc"],
                # fsum: the same value whatever order the sets were read in
                "mean_corruption_acc": math.fsum(x["test_acc"] for x in mine) / len(mine),
                **({"network_sha256": mine[0]["network_sha256"]} if "network_sha256" in mine[0] else {}),
            }
        )
    return out


def plot(path: str, summary: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for network in sorted({x["network"] for x in summary}, key=lambda n: (n != "LT", n)):
        pts = sorted((x for x in summary if x["network"] == network), key=lambda x: -x["density"])
        ax.plot(
            [100 * x["density"] for x in pts],
            [100 * x["mean_corruption_acc"] for x in pts],
            marker="o",
            label=network if network == "LT" else f"pooled ({network})",
        )
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("mean corruption accuracy (%)")
    ax.set_title("out of distribution: accuracy on corrupted test sets, severities 1-5")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
