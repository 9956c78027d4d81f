"""The MED model: ViT image encoder, BERT-style text encoder/decoder, losses, generation, weights."""
