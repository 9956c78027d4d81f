"""Training: one DeepSpeed engine for pre-training and both fine-tunings, resumable and tracked."""
