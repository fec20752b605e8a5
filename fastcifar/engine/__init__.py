"""The network and the maths of one step: model, train step, evaluation, LR range test, optimizer
and schedule, compilation, receptive fields. Imports data, system and errors."""
