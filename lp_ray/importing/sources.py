"""Tickets trained elsewhere, read as lp-ray tickets (docs/architecture.md, "Bring your own tickets"):
the one list of the formats `lp-ray import` reads and, per format, the name-mapping table of each
architecture it can map onto lp-ray's model registry.

    openlth        an OpenLTH lottery replicate folder (.../lottery_<hash>/replicate_<n>): level_<L>/main/
                   holds mask.pth ({tensor name: 0/1}) and model_ep<E>_it<I>.pth (state dicts); a
                   level's ticket is its latest model file, times its mask
    lottery-pools  the Lottery Pools paper's code (IMP by main_imp.py): a save folder of <L>model_SA_best
                   .pth.tar (or <L>checkpoint.pth.tar) dicts whose `state_dict` holds torch.nn.utils.prune
                   pairs (weight_orig, weight_mask) and an input-normalization layer
    files          any IMP code's tickets for any model lp-ray knows (built in or a plugin): a folder with
                   tickets.yaml naming one weights file (and mask file) per round and the rewind point,
                   in lp-ray's tensor names (the job's model's state dict); see `_files`

Files are read with `torch.load(weights_only=True)` only: tensors, numbers, strings and plain
containers. A file that needs code to be unpickled is refused, never run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lp_ray.errors import LpRayError

State = dict[str, torch.Tensor]


def load_weights_only(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, or what a truncated file raises
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise LpRayError(
                f"{path}: needs code to be unpickled, which lp-ray never does (torch.load weights_only=True): {first[:160]}"
            ) from None
        raise LpRayError(f"{path}: unreadable checkpoint ({first[:200]})") from None


# --------------------------------------------------------------------------------------------------
# Name mapping: a function from the source's tensor name to lp-ray's (None: not a model tensor)


def _resnet18_from_torchvision(name: str) -> str | None:
    """torchvision-style CIFAR ResNet-18 (the paper's code): layerL.B.* -> layers.<index>.*,
    downsample.0/1 -> shortcut.0/1; its input-normalization buffers are not model tensors."""
    if name.startswith("normalize."):
        return None
    m = re.fullmatch(r"layer([1-4])\.([01])\.(.+)", name)
    if m:
        index = 2 * (int(m.group(1)) - 1) + int(m.group(2))
        rest = m.group(3).replace("downsample.", "shortcut.")
        return f"layers.{index}.{rest}"
    return name


def _vgg16_same_names(name: str) -> str | None:
    """The paper's VGG-16-BN: features.<i> and classifier, as lp-ray's; normalization dropped."""
    return None if name.startswith("normalize.") else name


# OpenLTH cifar_vgg_16: layers.<k> are ConvModules (conv, bn) or max-pools; lp-ray's features.<i> put conv,
# bn and ReLU in one Sequential, so the k-th module of the plan maps to an index that skips the ReLUs.
_OPENLTH_VGG16_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def _openlth_vgg16(name: str) -> str | None:
    if name.startswith("fc."):
        return "classifier." + name[3:]
    m = re.fullmatch(r"layers\.(\d+)\.(conv|bn)\.(.+)", name)
    if not m:
        return None
    k, part, rest = int(m.group(1)), m.group(2), m.group(3)
    index = sum(1 if v == "M" else 3 for v in _OPENLTH_VGG16_PLAN[:k])
    return f"features.{index + (1 if part == 'bn' else 0)}.{rest}"


def _same(name: str) -> str | None:
    return name


@dataclass(frozen=True)
class Format:
    read: Callable[[Path], dict[int, tuple[State, State | None]]]  # folder -> {round: (state, mask or None)}
    # lp-ray model -> the source's names mapped to lp-ray's; None: any model, in lp-ray's own names
    names: dict[str, Callable[[str], str | None]] | None
    # (lp-ray model, data set) -> the input normalization the source model carries inside it, if any:
    # a checkpoint whose normalization differs from lp-ray's loader for that data set is refused
    normalizes_inside: bool = False
    suffixes: tuple[str, ...] = (".pth", ".tar")  # the files whose bytes name the imported run
    # a sparse round without a mask file: its mask is where its prunable weights are nonzero
    mask_from_zeros: bool = False
    # folder -> the rewind point's weights, if the source has one (kept as the run's rewind.safetensors)
    rewind: Callable[[Path], State | None] = lambda folder: None

    def name_of(self, model: str) -> Callable[[str], str | None]:
        return _same if self.names is None else self.names[model]

    def reads(self, model: str) -> bool:
        return self.names is None or model in self.names


# --------------------------------------------------------------------------------------------------
# OpenLTH


def _openlth(folder: Path) -> dict[int, tuple[State, State | None]]:
    levels = sorted(
        (int(p.name.split("_")[1]), p / "main")
        for p in folder.glob("level_*")
        if p.name.split("_")[1].isdigit() and (p / "main").is_dir()
    )
    if not levels:
        raise LpRayError(
            f"{folder}: no level_<L>/main/ folders: point at an OpenLTH replicate folder (.../replicate_<n>)"
        )
    out = {}
    for level, main in levels:
        models = []
        for p in main.glob("model_ep*_it*.pth"):
            m = re.fullmatch(r"model_ep(\d+)_it(\d+)\.pth", p.name)
            if m:
                models.append(((int(m.group(1)), int(m.group(2))), p))
        if not models or not (main / "mask.pth").is_file():
            raise LpRayError(f"{main}: an OpenLTH level needs mask.pth and a model_ep<E>_it<I>.pth")
        final = max(models)[1]  # the last step trained (the level's start step is saved too)
        state, mask = load_weights_only(final), load_weights_only(main / "mask.pth")
        if not isinstance(state, dict) or not isinstance(mask, dict):
            raise LpRayError(f"{final}: not an OpenLTH state dict")
        out[level] = ({k: v for k, v in state.items()}, {k: v.float() for k, v in mask.items()})
    return out


# --------------------------------------------------------------------------------------------------
# The Lottery Pools paper's code


def _lottery_pools(folder: Path, which: str = "model_SA_best") -> dict[int, tuple[State, State | None]]:
    files = {}
    for p in folder.glob(f"*{which}.pth.tar"):
        head = p.name[: -len(f"{which}.pth.tar")]
        if head.isdigit():
            files[int(head)] = p
    if not files:
        raise LpRayError(f"{folder}: no <round>{which}.pth.tar files (the paper code's main_imp.py save folder)")
    out = {}
    for r, p in sorted(files.items()):
        raw = load_weights_only(p)
        sd = raw.get("state_dict") if isinstance(raw, dict) else None
        if not isinstance(sd, dict):
            raise LpRayError(f"{p}: no state_dict in it")
        state, mask = {}, {}
        for k, v in sd.items():
            if k.endswith(".weight_orig"):
                state[k[: -len("_orig")]] = v
            elif k.endswith(".weight_mask"):
                mask[k[: -len("_mask")]] = v.float()
            else:
                state[k] = v
        out[r] = (state, mask or None)  # round 0 was trained dense: no prune pairs
    return out


# --------------------------------------------------------------------------------------------------
# Any IMP code's tickets: a manifest and one file per round

MANIFEST = "tickets.yaml"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _manifest(folder: Path) -> dict:
    """tickets.yaml:

        rewind: rewind.safetensors            # optional: the weights IMP rewound to
        rounds:                               # round 0 is the dense network; one entry per ticket
          - {round: 0, weights: round_00.safetensors}
          - {round: 1, weights: round_01.safetensors, mask: mask_01.safetensors}   # mask: optional

    Paths are relative to the folder. A mask holds a 0/1 tensor per pruned tensor; without one, a
    sparse round's mask is where its prunable weights are nonzero."""
    import yaml

    path = folder / MANIFEST
    if not path.is_file():
        raise LpRayError(f"{folder}: no {MANIFEST} (the files format's manifest: see `lp-ray import --help`)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LpRayError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("rounds"), list) or not raw["rounds"]:
        raise LpRayError(f"{path}: expected a mapping with a non-empty `rounds` list")
    unknown = sorted(set(raw) - {"rounds", "rewind"})
    if unknown:
        raise LpRayError(f"{path}: unknown key {unknown[0]!r} (known: rounds, rewind)")
    for i, entry in enumerate(raw["rounds"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("round"), int) or "weights" not in entry:
            raise LpRayError(f"{path}: rounds[{i}]: expected {{round: <int>, weights: <file>, mask: <file, optional>}}")
        extra = sorted(set(entry) - {"round", "weights", "mask"})
        if extra:
            raise LpRayError(f"{path}: rounds[{i}]: unknown key {extra[0]!r} (known: round, weights, mask)")
    return raw


def _file_in(folder: Path, name: object, where: str) -> Path:
    """A file the manifest names: inside the folder (no absolute path, no way out of it), present."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise LpRayError(f"{folder / MANIFEST}: {where}: {name!r} must be a file name inside the folder")
    path = folder / name
    if path.suffix not in WEIGHT_SUFFIXES:
        raise LpRayError(f"{path}: {where}: expected one of {', '.join(WEIGHT_SUFFIXES)} (safetensors or torch.save)")
    if not path.is_file():
        raise LpRayError(f"{path}: {where}: no such file")
    return path


def _tensors(path: Path) -> State:
    """A {name: tensor} file: safetensors, or torch.save'd (weights_only; a {'state_dict': ...} wrapper is
    opened)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            out = load_file(str(path))
        except Exception as e:
            raise LpRayError(f"{path}: not a safetensors file ({(str(e).splitlines() or [''])[0][:160]})") from None
    else:
        out = load_weights_only(path)
        if isinstance(out, dict) and isinstance(out.get("state_dict"), dict):
            out = out["state_dict"]
    if not isinstance(out, dict) or not out or not all(isinstance(v, torch.Tensor) for v in out.values()):
        raise LpRayError(f"{path}: expected a mapping of tensor names to tensors")
    return dict(out)


def _files(folder: Path) -> dict[int, tuple[State, State | None]]:
    raw = _manifest(folder)
    out = {}
    for i, entry in enumerate(raw["rounds"]):
        r = entry["round"]
        if r in out:
            raise LpRayError(f"{folder / MANIFEST}: round {r} is listed twice")
        state = _tensors(_file_in(folder, entry["weights"], f"rounds[{i}].weights"))
        mask = _tensors(_file_in(folder, entry["mask"], f"rounds[{i}].mask")) if "mask" in entry else None
        out[r] = (state, {k: v.float() for k, v in mask.items()} if mask is not None else None)
    return out


def _files_rewind(folder: Path) -> State | None:
    raw = _manifest(folder)
    return _tensors(_file_in(folder, raw["rewind"], "rewind")) if "rewind" in raw else None


FORMATS: dict[str, Format] = {
    "openlth": Format(
        _openlth, {"cifar_vgg16_avgpool": _openlth_vgg16, "imagenet_resnet18": _same, "imagenet_resnet34": _same}
    ),
    "lottery-pools": Format(
        _lottery_pools,
        {"cifar_resnet18": _resnet18_from_torchvision, "cifar_vgg16_avgpool": _vgg16_same_names},
        normalizes_inside=True,
    ),
    "files": Format(
        _files,
        None,
        suffixes=(*WEIGHT_SUFFIXES, ".yaml"),
        mask_from_zeros=True,
        rewind=_files_rewind,
    ),
}
