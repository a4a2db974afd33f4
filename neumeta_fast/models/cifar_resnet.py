"""CIFAR-style ResNet-20/32/56: a 3x3 stem, three stages of BasicBlocks, global pooling, a linear head.

Shortcuts that change shape use a 1x1 conv + BatchNorm (not zero padding), as in the
CIFAR ResNets NeuMeta builds on. NeuMeta morphs the hidden layer (conv1 -> bn1 -> conv2)
of the last stage's blocks; `hidden_width` sets that width.
"""
import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU. `hidden` is the width between the two convs."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int = 10,
        stage_widths: tuple[int, int, int] = (16, 32, 64),
        hidden_width: int | None = None,
        in_channels: int = 3,
        hidden_stages: str = "last",
    ):
        super().__init__()
        if hidden_stages not in ("last", "all"):
            raise ValueError(f"hidden_stages must be 'last' or 'all', got {hidden_stages!r}")
        self.conv1 = nn.Conv2d(in_channels, stage_widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        width_in = stage_widths[0]
        for index, width in enumerate(stage_widths):
            last_stage = index == len(stage_widths) - 1
            if hidden_width is None:
                hidden = width
            elif last_stage:
                hidden = hidden_width
            elif hidden_stages == "all":  # the same fraction of every stage's width
                hidden = max(1, round(hidden_width * width / stage_widths[-1]))
            else:
                hidden = width
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(width_in, hidden, width, stride))
                width_in = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(stage_widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet(
    depth: int = 20,
    num_classes: int = 10,
    hidden_width: int | None = None,
    in_channels: int = 3,
    stage_widths: tuple[int, int, int] = (16, 32, 64),
    hidden_stages: str = "last",
) -> CifarResNet:
    """ResNet-`depth` (20, 32, 56, ...: depth = 6n + 2) for 32x32 images.

    hidden_width: width of the hidden layer (conv1 -> bn1 -> conv2) of every block of the
        last stage; None keeps it equal to the stage width (the standard network).
    hidden_stages: "last" (NeuMeta's ResNet setting) or "all": every stage's blocks get the
        hidden width hidden_width * stage_width / last stage width (rounded, at least 1).
    stage_widths: output widths of the three stages (the stem has the first one).
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 56, ...), got {depth}")
    if len(stage_widths) != 3:
        raise ValueError(f"stage_widths needs 3 widths, got {stage_widths}")
    return CifarResNet((depth - 2) // 6, num_classes, tuple(stage_widths), hidden_width, in_channels, hidden_stages)
