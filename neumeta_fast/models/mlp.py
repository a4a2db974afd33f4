"""Multi-layer perceptron with ReLU: the input is flattened, every hidden layer has the same width."""
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden_width: int, hidden_layers: int):
        super().__init__()
        if hidden_layers < 1:
            raise ValueError(f"MLP needs at least one hidden layer, got hidden_layers={hidden_layers}")
        widths = [in_features] + [hidden_width] * hidden_layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(hidden_width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.head(x)


def mlp(in_features: int, num_classes: int = 10, hidden_width: int = 128, hidden_layers: int = 2) -> MLP:
    return MLP(in_features, num_classes, hidden_width, hidden_layers)
