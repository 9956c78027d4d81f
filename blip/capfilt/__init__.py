"""CapFilt (BLIP sec. 3.3), its expensive half: caption noisy web images and score every text, at any scale."""
