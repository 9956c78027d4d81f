"""CapFilt (BLIP sec. 3.3): caption noisy web images, filter web and synthetic texts, at any scale."""
