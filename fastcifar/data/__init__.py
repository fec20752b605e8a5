"""The data: the data sets' specs (CIFAR-10, CIFAR-100) and their sources (download, verify,
parse), datasets, normalisation, the augmentation spec, image files and the three loaders.
Imports system and errors only."""

# The loader back ends by name; here, where importing them loads no torch, so that the config
# (and --help) can name them.
LOADER_NAMES = ("torch", "ffcv", "dali")
