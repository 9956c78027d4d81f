"""CapFilt's captioner: the image-grounded decoder fine-tuned with LM on human captions."""
