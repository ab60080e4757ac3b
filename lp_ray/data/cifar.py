"""CIFAR-10/100 from the official python archives (cifar-10-python.tar.gz, cifar-100-python.tar.gz).

Those archives hold Python pickles. We never unpickle untrusted data with the stock unpickler: a
restricted one admits only the handful of numpy/builtin constructors the official files use, so a
tampered archive fails with an error instead of running code. (torch is imported inside the loader:
the registry and its checks stay light.)
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from lp_ray.errors import LpRayError
from lp_ray.spec import DataSpec

FIELDS = ("path", "augment")

ARCHIVES = {
    "cifar10": (
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
        10,
    ),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}
SOURCE_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "bytes"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2 (re-packed archives)
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def check(d: DataSpec, fail) -> None:
    """Nothing beyond the types: where the archive is is checked by preflight, before anything starts."""


def preflight(spec: DataSpec) -> None:
    archive_path(spec, spec.dataset)


def archive_path(spec: DataSpec, dataset: str) -> Path:
    filename = ARCHIVES[dataset][0]
    if spec.path is None:
        raise LpRayError(f"data.path is not set: put {filename} (from {SOURCE_URL}) somewhere and set data.path to it")
    p = Path(spec.path).expanduser()
    if p.is_dir():
        p = p / filename
    if not p.is_file():
        raise LpRayError(f"{p}: no such file; download {filename} from {SOURCE_URL} and point data.path at it")
    return p


def read_archive(path: Path, dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return uint8 NCHW train/test images and int64 labels."""
    _, folder, train_names, test_names, label_key, _ = ARCHIVES[dataset]
    try:
        with tarfile.open(path, "r:gz") as tar:

            def part(names):
                xs, ys = [], []
                for name in names:
                    member = tar.extractfile(f"{folder}/{name}")
                    if member is None:
                        raise LpRayError(f"{path}: {folder}/{name} is not a file in the archive")
                    d = _RestrictedUnpickler(io.BytesIO(member.read()), encoding="bytes").load()
                    xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                    ys.append(np.asarray(d[label_key], dtype=np.int64))
                return np.concatenate(xs), np.concatenate(ys)

            x_train, y_train = part(train_names)
            x_test, y_test = part(test_names)
    except LpRayError:
        raise
    except KeyError as e:
        raise LpRayError(f"{path}: not a {dataset} python archive (missing {e})") from None
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError, ValueError) as e:
        raise LpRayError(f"{path}: unreadable {dataset} archive: {e}") from None
    return x_train, y_train, x_test, y_test


def load(spec: DataSpec, run):
    import torch

    from lp_ray.data.base import TensorSource, random_crop_flip

    dataset = spec.dataset
    x_train, y_train, x_test, y_test = read_archive(archive_path(spec, dataset), dataset)
    mean = torch.tensor(MEAN[dataset]).view(1, 3, 1, 1)
    std = torch.tensor(STD[dataset]).view(1, 3, 1, 1)

    def normalize(x: np.ndarray):
        return (torch.from_numpy(x).float() / 255.0 - mean) / std

    k = ARCHIVES[dataset][5]
    augmentation = random_crop_flip(4) if spec.augment else None
    train = TensorSource(normalize(x_train), torch.from_numpy(y_train), k, augmentation)
    test = TensorSource(normalize(x_test), torch.from_numpy(y_test), k)
    return train, test, k, (3, 32, 32)
