"""OpenLTH's CIFAR ResNet (open_lth/models/cifar_resnet.py, Frankle et al.): depth 6n+2 (ResNet-20:
n = 3), three stages of n basic blocks at 1x, 2x and 4x `base_width` (16, 32, 64), BatchNorm, 1x1
projection shortcuts where the shape changes, global average pooling and one linear head. Pruned by
lp-ray's default rule: every conv weight, and the head with imp.prune_linear (OpenLTH prunes both)."""

from lp_ray.plugins import Field, register_model


def _depth_ok(depth: int):
    return (depth >= 8 and (depth - 2) % 6 == 0) or f"must be 6n+2 with n >= 1 (20, 32, 44, 56, ...), got {depth}"


@register_model(
    "openlth_cifar_resnet",
    fields={
        "depth": Field(int, 20, check=_depth_ok, help="6n+2 layers: 20, 32, 44, 56, 110"),
        "base_width": Field(int, 16, check=lambda w: w >= 1 or "must be at least 1", help="the first stage's width"),
    },
)
def cifar_resnet(num_classes, input_shape, depth, base_width):
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, f_in: int, f_out: int, downsample: bool):
            super().__init__()
            stride = 2 if downsample else 1
            self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(f_out)
            self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(f_out)
            if downsample or f_in != f_out:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out)
                )
            else:
                self.shortcut = nn.Sequential()

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            width = base_width
            self.conv = nn.Conv2d(input_shape[0], width, 3, stride=1, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(width)
            blocks = []
            f_in = width
            for stage in range(3):
                f_out = base_width * 2**stage
                for i in range(n):
                    blocks.append(Block(f_in, f_out, downsample=stage > 0 and i == 0))
                    f_in = f_out
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(f_in, num_classes)

        def forward(self, x):
            out = F.relu(self.bn(self.conv(x)))
            out = self.blocks(out)
            out = F.adaptive_avg_pool2d(out, 1).flatten(1)
            return self.fc(out)

    return ResNet()
