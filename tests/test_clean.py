import unicodedata

import pytest

from amzqa.indexing.clean import clean_text, dedup_key


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Bright &amp; Early", "Bright & Early"),
        ("Bright &amp;amp; Early", "Bright & Early"),  # double-encoded
        ("Widget &amp;amp;#8211; Pro", "Widget \u2013 Pro"),  # three rounds
        ("It&#8217;s &#x2019;here&#x2019;", "It\u2019s \u2019here\u2019"),
        ("<b>New!</b> skates<br/>for <i>riders</i>", "New! skates for riders"),
        ("a < b and 3 > 2, <3", "a < b and 3 > 2, <3"),  # not tags
        ("&lt;script&gt;alert(1)&lt;/script&gt;Frame", "alert(1) Frame"),
        ("  Garden  Gnome \t\n Statue  ", "Garden Gnome Statue"),
        ("Weather\x0bresistant\x00paint", "Weather resistant paint"),
        ("soft\u00adhy\u00adphen zero\u200bwidth", "softhyphen zero width"),  # a soft hyphen sits inside a word
        ("ig\u200dno\u200cre wo\u2060rd", "ignore word"),  # joiners too: deleted, not made spaces
        ("\ufeffBOM title", "BOM title"),
        ("", ""),
        ("plain ascii title", "plain ascii title"),
    ],
)
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected


def test_clean_text_normalises_to_nfc():
    decomposed = "Cafe\u0301 cre\u0300me"
    out = clean_text(decomposed)
    assert out == "Caf\u00e9 cr\u00e8me"
    assert unicodedata.is_normalized("NFC", out)


def test_clean_text_is_idempotent():
    for raw in ["A &amp;amp; B <p>c</p>", "x\u0301  y", "plain"]:
        once = clean_text(raw)
        assert clean_text(once) == once


def test_dedup_key_ignores_case_only():
    assert dedup_key("The Road", "A Novel") == dedup_key("the road", "a novel")
    assert dedup_key("The Road", "A Novel") != dedup_key("The Road", "A Novel.")
