"""BLIP: MED pre-training and CapFilt bootstrapping."""
