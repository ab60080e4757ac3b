"""The default job's network: the MNIST-1D paper's CNN (three stride-2 convolutions of width 64) with
BatchNorm after each convolution, so BN recalibration matters as it does for the paper's ResNets."""

import torch
import torch.nn as nn


class Conv1dBN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 64, length: int = 40):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(2, 1, length)).flatten(1).shape[1]
        self.classifier = nn.Linear(flat, num_classes)

    def forward(self, x):
        if x.dim() == 2:  # (batch, length) -> (batch, 1 channel, length)
            x = x.unsqueeze(1)
        return self.classifier(self.features(x).flatten(1))
