"""The text transformer in BLIP's three roles, on transformers' BLIP text modules.

- unimodal text encoder: bidirectional self-attention only ([CLS] feature for ITC);
- image-grounded text encoder: a cross-attention layer between self-attention and feed-forward in
  every block, [ENC] in place of [CLS] (its output feeds the ITM head);
- image-grounded text decoder: causal self-attention, [DEC] starts a caption, [SEP] ends it.

`BlipTextModel` already does the first two (cross-attention runs only when image embeddings are
passed) and `BlipTextLMHeadModel` the third, with a key/value cache for generation. We build them
from our architecture numbers and make encoder and decoder share every parameter except the
self-attention layers, which the paper's Table 3 found best.
"""

from __future__ import annotations

from transformers import BlipTextConfig
from transformers.models.blip.modeling_blip_text import BlipTextLMHeadModel, BlipTextModel

from blip.config import TextArch
from blip.tokenizer import DEC_ID, PAD_ID, SEP_ID, VOCAB_SIZE


def text_config(arch: TextArch, encoder_width: int, label_smoothing: float, tie_lm_head: bool = True,
                vocab_size: int = VOCAB_SIZE) -> BlipTextConfig:
    """transformers' BlipTextConfig for our architecture; `is_decoder` there means 'has cross-attention'."""
    return BlipTextConfig(
        vocab_size=vocab_size, hidden_size=arch.hidden, encoder_hidden_size=encoder_width,
        intermediate_size=arch.intermediate, num_hidden_layers=arch.layers, num_attention_heads=arch.heads,
        max_position_embeddings=arch.positions,
        hidden_dropout_prob=arch.dropout, attention_probs_dropout_prob=arch.dropout, layer_norm_eps=1e-12,
        bos_token_id=DEC_ID, pad_token_id=PAD_ID, sep_token_id=SEP_ID, eos_token_id=SEP_ID, is_decoder=True,
        label_smoothing=label_smoothing, tie_word_embeddings=tie_lm_head)


def build_text_encoder(cfg: BlipTextConfig) -> BlipTextModel:
    """Unimodal and image-grounded text encoder (no pooler: BLIP reads the first token directly)."""
    return BlipTextModel(cfg, add_pooling_layer=False)


def build_text_decoder(cfg: BlipTextConfig) -> BlipTextLMHeadModel:
    """Image-grounded text decoder with the LM head."""
    return BlipTextLMHeadModel(cfg)


def share_all_but_self_attention(encoder: BlipTextModel, decoder: BlipTextLMHeadModel) -> None:
    """Make the decoder use the encoder's embeddings, cross-attention and feed-forward modules.

    Module assignment (not copying) makes each shared parameter one tensor, so one optimizer step
    updates both roles. The LM head, tied to the word embeddings, is re-pointed at the shared ones.
    Call before building an optimizer or a DeepSpeed engine: they hold parameter objects.
    """
    if len(encoder.encoder.layer) != len(decoder.bert.encoder.layer):
        raise ValueError("encoder and decoder must have the same number of layers to share them")
    decoder.bert.embeddings = encoder.embeddings
    for enc_layer, dec_layer in zip(encoder.encoder.layer, decoder.bert.encoder.layer):
        dec_layer.crossattention = enc_layer.crossattention
        dec_layer.intermediate = enc_layer.intermediate
        dec_layer.output = enc_layer.output
    if decoder.config.tie_word_embeddings:
        decoder.cls.predictions.decoder.weight = encoder.embeddings.word_embeddings.weight
