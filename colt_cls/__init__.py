"""Classifier front end of COLT: CIFAR-10/100, TinyImageNet and ImageNet data, Conv-3, CIFAR ResNet-18,
CIFAR MobileNetV2 and timm models, and the trainer the engine drives."""
