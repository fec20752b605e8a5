"""What a run writes and reads back: the config and its checks and file, the config record, the
summary, the checkpoint, provenance, the run folder and its resume hints."""
