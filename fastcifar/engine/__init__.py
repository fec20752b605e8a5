"""The network and the maths of one step: model, train step, evaluation, LR range test, optimizer
and schedule, compilation, receptive fields. Imports data, system and errors."""

# The networks a run can name (--model): the assignment's ResNet-9, airbench94's network.
NETWORK_NAMES = ("resnet9", "airbench")
