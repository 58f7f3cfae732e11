"""Training: configuration, model building, and dynamic data selection in the HF Trainer."""
