"""The machine and the processes: device and precision, torchrun ranks, stop signals, progress
lines, files written safely. Imports nothing of fastcifar but errors."""
