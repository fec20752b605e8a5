"""What a run shows: the report, plots, Grad-CAM, TensorBoard, statistics over seeds."""
