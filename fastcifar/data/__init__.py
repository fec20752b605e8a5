"""The data: CIFAR-10 sources (download, verify, parse), datasets, normalisation, the
augmentation spec and the three loaders. Imports system and errors only."""

# The loader back ends by name; here, where importing them loads no torch, so that the config
# (and --help) can name them.
LOADER_NAMES = ("torch", "ffcv", "dali")
