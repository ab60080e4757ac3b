"""A data set kept as two NumPy archives in one folder (`data.path`): train.npz and test.npz, each with
`x` (examples, float or uint8 images as N x C x H x W or N x H x W x C) and `y` (integer labels).
Read with allow_pickle=False: an archive holding Python objects is refused, never unpickled."""

from lp_ray.plugins import Field, Splits, register_dataset


def _flip(x, generator):
    """A horizontal flip of half the images of a batch, the draws from lp-ray's generator."""
    import torch

    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


@register_dataset(
    "npz",
    reads_path=True,
    fields={
        "channels_last": Field(bool, False, help="images stored N x H x W x C (as most image tools write them)"),
    },
)
def npz(path, channels_last):
    """Training batches get random horizontal flips where the job's data.augment is true (the default)."""
    from pathlib import Path

    import numpy as np
    import torch

    if path is None:
        raise ValueError("set data.path to a folder holding train.npz and test.npz")
    parts = {}
    for split in ("train", "test"):
        file = Path(path) / f"{split}.npz"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such file")
        with np.load(file, allow_pickle=False) as arrays:
            x, y = arrays["x"], arrays["y"]
        x = torch.from_numpy(x)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if channels_last:
            x = x.permute(0, 3, 1, 2).contiguous()
        parts[split] = (x, torch.from_numpy(y).long())
    classes = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    return Splits(parts["train"], parts["test"], num_classes=classes, augment=_flip)
