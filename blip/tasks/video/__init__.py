"""Zero-shot video (paper sec. 5.6): text-to-video retrieval and video QA with image models, no training on video."""
