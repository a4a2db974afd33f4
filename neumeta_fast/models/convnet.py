"""A small conv-BN network whose every hidden layer has the same width (the digits demo's model).

Morphing every hidden width (not one block) is what makes pruning hurt on an easy
dataset: at 25% width three layers lose three quarters of their channels.
"""
import torch
from torch import nn


class ConvNet(nn.Module):
    """[conv3x3-BN-ReLU] x2, max-pool, conv3x3-BN-ReLU, global average pool, linear."""

    def __init__(self, width: int, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        if width < 1:
            raise ValueError(f"ConvNet width must be >= 1, got {width}")
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.head(x.mean((2, 3)))


def convnet(width: int = 32, num_classes: int = 10, in_channels: int = 1) -> ConvNet:
    return ConvNet(width, num_classes, in_channels)
