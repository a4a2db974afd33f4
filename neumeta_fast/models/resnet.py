"""ImageNet-style ResNet-18 (the torchvision layout: 7x7 stride-2 stem, max-pool, four stages of
two BasicBlocks, 1x1 conv + BatchNorm shortcuts), with a scalable base width."""
import torch
from torch import nn

from .cifar_resnet import BasicBlock


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000, base_width: int = 64, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        width_in = base_width
        for index in range(4):
            width = base_width * 2**index
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(BasicBlock(width_in, width, width, stride), BasicBlock(width, width, width)))
            width_in = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, base_width: int = 64, in_channels: int = 3) -> ResNet18:
    """base_width: channels of the stem and the first stage (stages double it: 64-128-256-512 by default)."""
    return ResNet18(num_classes, base_width, in_channels)
