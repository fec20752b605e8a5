"""fastcifar: a fast, honest trainer for the DAWNBench "custom ResNet" (ResNet-9) on CIFAR-10."""

__version__ = "0.1.0"
