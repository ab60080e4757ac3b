"""VGG-16 with BatchNorm for 32x32 inputs: 13 conv-BN-ReLU layers and one linear layer, in two variants.

cifar_vgg16          five max-pools (lp-ray's first VGG)
cifar_vgg16_avgpool  four max-pools, then an average pool over the last 2x2: the VGG-16 of the Lottery
                     Pools paper's code and of OpenLTH (`cifar_vgg_16`), whose tickets `lp-ray import`
                     reads; the same tensors under the same names as cifar_vgg16
"""

import torch.nn as nn

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
CFG16_AVGPOOL = CFG16[:-1] + ["A"]  # the last max-pool becomes an average pool


class VGG(nn.Module):
    def __init__(self, cfg, num_classes: int):
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            elif v == "A":
                layers.append(nn.AvgPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def vgg16_bn(num_classes: int = 10) -> VGG:
    return VGG(CFG16, num_classes)


def vgg16_bn_avgpool(num_classes: int = 10) -> VGG:
    return VGG(CFG16_AVGPOOL, num_classes)
