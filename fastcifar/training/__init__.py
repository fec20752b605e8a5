"""One run of training: the trainer (what a run is built of), its state, the loop over epochs."""
