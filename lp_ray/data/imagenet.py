"""ImageNet as an ImageFolder (`<path>/train/<class>/*.JPEG`, `<path>/val/<class>/*.JPEG`), through the
optional `vision` extra: torchvision is imported only here, and only when this data set is used (torch
too, inside the loader: the registry and its checks stay light)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lp_ray.errors import LpRayError
from lp_ray.spec import DataSpec

FIELDS = ("path",)


def check(d: DataSpec, fail) -> None:
    """Nothing beyond the types: the folder is looked for by preflight, before anything starts."""


def preflight(spec: DataSpec) -> None:
    require_torchvision()
    if spec.path is None or not (Path(spec.path) / "train").is_dir():
        raise LpRayError(f"data.path={spec.path!r}: no ImageNet train/ folder there")


def require_torchvision():
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # ImportError, or a broken install (no CPU build on some machines)
        raise LpRayError(
            f"the imagenet data set and ImageNet ResNets need torchvision, which failed to import ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); install the extra: pip install 'lp-ray[vision]'"
        ) from None
    return torchvision


class ImageFolderSource:
    """Decodes images on demand; a thread pool overlaps the JPEG decoding of one batch."""

    def __init__(self, root: Path, train: bool):
        tv = require_torchvision()
        T = tv.transforms
        norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        self.folder = tv.datasets.ImageFolder(str(root))
        self.num_classes = len(self.folder.classes)
        self.train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        self.eval_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])
        self.pool = ThreadPoolExecutor(8)

    def __len__(self):
        return len(self.folder)

    def batch(self, idx, augment, gen):
        import torch

        tf = self.train_tf if augment else self.eval_tf

        def one(i):
            path, label = self.folder.samples[int(i)]
            return tf(self.folder.loader(path)), label

        items = list(self.pool.map(one, idx.tolist()))
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def load(spec: DataSpec, run):
    if spec.path is None:
        raise LpRayError("data.path is not set: point it at an ImageNet folder with train/ and val/ inside")
    root = Path(spec.path).expanduser()
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise LpRayError(
                f"{root / sub}: no such folder; data.path must hold ImageNet's train/ and val/ class folders"
            )
    train, test = ImageFolderSource(root / "train", True), ImageFolderSource(root / "val", False)
    return train, test, train.num_classes, (3, 224, 224)
