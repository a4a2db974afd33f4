"""A small convolutional VAE whose hidden width is variable (the demo's generation task)."""
import torch
from torch import nn
from torch.nn import functional as F


class ConvVAE(nn.Module):
    """Encoder conv-conv(stride 2)-linear to (mu, logvar); decoder linear-upsample-conv-conv.

    `width` is every hidden conv's channel count. The decoder's linear layer feeds a fixed
    number of channels (`seed_channels`): a reshape of width-dependent features into channels
    would tie the width to a view that channel-group tracing cannot follow.
    forward returns (reconstruction in [0, 1], mu, logvar); in eval mode z = mu.
    """
    seed_channels = 16

    def __init__(self, width: int, latent: int = 8, in_channels: int = 1, image_size: int = 8):
        super().__init__()
        if width < 1 or image_size % 2:
            raise ValueError(f"ConvVAE needs width >= 1 and an even image size, got {width}, {image_size}")
        self.side = image_size // 2
        self.enc1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.enc2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.to_stats = nn.Linear(width * self.side * self.side, 2 * latent)
        self.from_latent = nn.Linear(latent, self.seed_channels * self.side * self.side)
        self.dec1 = nn.Conv2d(self.seed_channels, width, 3, padding=1)
        self.dec2 = nn.Conv2d(width, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor):
        h = F.relu(self.enc2(F.relu(self.enc1(x))))
        mu, logvar = self.to_stats(h.flatten(1)).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        h = F.relu(self.from_latent(z)).view(-1, self.seed_channels, self.side, self.side)
        h = F.relu(self.dec1(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        return torch.sigmoid(self.dec2(h)), mu, logvar


def conv_vae(width: int = 32, latent: int = 8, in_channels: int = 1, image_size: int = 8) -> ConvVAE:
    return ConvVAE(width, latent, in_channels, image_size)
