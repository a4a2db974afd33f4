"""LeNet-5-style convnet: two 5x5 conv + ReLU + 2x2 max-pool stages, then three linear layers."""
import torch
from torch import nn


class LeNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        widths: tuple[int, int, int, int] = (6, 16, 120, 84),
    ):
        super().__init__()
        if image_size < 4 or image_size % 4:
            raise ValueError(f"LeNet needs an image size divisible by 4 (two 2x2 pools), got {image_size}")
        conv1, conv2, fc1, fc2 = widths
        # padding 2 keeps the spatial size, so small images (8x8 digits) fit as well as 28x28 ones.
        self.conv1 = nn.Conv2d(in_channels, conv1, 5, padding=2)
        self.conv2 = nn.Conv2d(conv1, conv2, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(conv2 * (image_size // 4) ** 2, fc1)
        self.fc2 = nn.Linear(fc1, fc2)
        self.fc3 = nn.Linear(fc2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = x.flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def lenet(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    widths: tuple[int, int, int, int] = (6, 16, 120, 84),
) -> LeNet:
    """widths: channels of conv1, conv2 and features of fc1, fc2."""
    return LeNet(num_classes, in_channels, image_size, tuple(widths))
