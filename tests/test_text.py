import pytest

from blip.data.text import CaptionError, clean_caption, prepare_caption


def test_clean_caption_like_the_release():
    assert clean_caption("A man riding a horse!  (On a beach.)", 30) == "a man riding a horse on a beach"
    assert clean_caption("  Two dogs:\tplaying;  in the\nsnow ~ ", 30) == "two dogs playing in the snow"
    # commas, apostrophes, hyphens and question marks survive, as in the release
    assert clean_caption("It's a black-and-white cat, isn't it?", 30) == "it's a black-and-white cat, isn't it?"


def test_truncates_to_max_words():
    assert clean_caption("one two three four five", 3) == "one two three"
    assert prepare_caption("one two three four five", 3, 100) == ("one two three", True)
    assert prepare_caption("one two", 3, 100) == ("one two", False)


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xfe caption in latin-1 \xe9", "caption_not_utf8"),
    ("", "caption_empty"),
    ("  ...!!! ", "caption_empty"),
    ("word " * 5000, "caption_too_long"),
])
def test_bad_captions_carry_a_reason(raw, reason):
    with pytest.raises(CaptionError) as e:
        prepare_caption(raw, 30, 4000)
    assert e.value.reason == reason


def test_utf8_bytes_are_decoded():
    assert prepare_caption("Un café crème".encode(), 30, 100) == ("un café crème", False)
