"""Pre-training (and the retrain on CapFilt's data): the MED model with ITC, ITM and LM."""
