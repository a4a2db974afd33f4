"""Width-parameterised model builders."""
from .cifar_resnet import BasicBlock, CifarResNet, cifar_resnet
from .lenet import LeNet, lenet
from .mlp import MLP, mlp
from .resnet import ResNet18, resnet18

__all__ = ["BasicBlock", "CifarResNet", "cifar_resnet", "LeNet", "lenet", "MLP", "mlp", "ResNet18", "resnet18"]
from .convnet import ConvNet, convnet
from .family import Family, WidthError, named_family
from .vae import ConvVAE, conv_vae

__all__ += ["ConvNet", "convnet", "Family", "WidthError", "named_family", "ConvVAE", "conv_vae"]
