"""Width-parameterised model builders."""
from .cifar_resnet import BasicBlock, CifarResNet, cifar_resnet
from .lenet import LeNet, lenet
from .mlp import MLP, mlp
from .resnet import ResNet18, resnet18

__all__ = ["BasicBlock", "CifarResNet", "cifar_resnet", "LeNet", "lenet", "MLP", "mlp", "ResNet18", "resnet18"]
