"""MSH-18 decides how a message's bytes are read; escapes are read strictly. Nothing is guessed."""

from __future__ import annotations

import pytest

from carehub.domain.hl7v2 import charset
from carehub.domain.hl7v2.charset import BadEscape, NotHL7, Undecodable, UnknownCharset, decode, escape, unescape
from carehub.domain.hl7v2.mapping import load_adt_mapping, map_message
from tests.hl7v2_messages import adt

PID_NAMED = {1: "1", 3: "H-1^^^RR8^MR", 5: "{family}^{given}", 11: "{street}^^Leeds^^LS1 4AP"}


def message(charset_value: str, family: str, given: str = "Zoë", street: str = "1 Rue") -> str:
    pid = {k: v.format(family=family, given=given, street=street) for k, v in PID_NAMED.items()}
    return adt("A01", pid=pid, msh_fields={"f18": charset_value} if charset_value else None)


def names(text: str) -> tuple[str, str]:
    out = map_message(text, load_adt_mapping())
    assert out.refusal is None, out.refusal
    person = out.events[0].person
    return person.family_name, person.given_name


def test_ascii_is_the_default() -> None:
    for value in ("", "ASCII", "ISO IR6"):
        raw = message(value, "Smith", "Jo").encode("ascii")
        assert names(decode(raw)) == ("Smith", "Jo")


def test_latin_1_with_a_non_ascii_name() -> None:
    raw = message("8859/1", "Ó Súilleabháin", "Zoë").encode("latin-1")
    assert "é".encode("latin-1") != "é".encode()  # the bytes really are Latin-1
    assert names(decode(raw)) == ("Ó Súilleabháin", "Zoë")


def test_utf_8_with_a_non_ascii_name() -> None:
    raw = message("UNICODE UTF-8", "Łukasiewicz", "Zoë").encode("utf-8")
    assert names(decode(raw)) == ("Łukasiewicz", "Zoë")


def test_latin_15_has_the_euro_sign() -> None:
    raw = message("8859/15", "Smith", "€uro").encode("iso8859-15")
    assert names(decode(raw))[1] == "€uro"


def test_only_the_first_repetition_of_msh_18_counts() -> None:
    raw = message("UNICODE UTF-8~8859/1", "Łukasiewicz").encode("utf-8")
    assert names(decode(raw))[0] == "Łukasiewicz"


@pytest.mark.parametrize("value", ["UNICODE", "utf-8", "UTF-8", "8859/16", "ISO IR87", "WINDOWS-1252"])
def test_unknown_charset(value: str) -> None:
    with pytest.raises(UnknownCharset) as caught:
        decode(message(value, "Smith", "Jo").encode("ascii"))
    assert caught.value.value == value
    assert repr(value) in str(caught.value)


def test_bytes_the_charset_does_not_define_are_an_error_never_replaced() -> None:
    with pytest.raises(Undecodable, match="not valid in the declared character set 'ASCII"):
        decode(message("", "Zoë").encode("latin-1"))
    with pytest.raises(Undecodable) as caught:
        decode(message("UNICODE UTF-8", "Zoë").encode("latin-1"))  # Latin-1 bytes declared UTF-8
    assert caught.value.charset == "UNICODE UTF-8"


def test_not_hl7() -> None:
    for raw in (b"", b"hello world", b"PID|1||H-1", b"\xef\xbb\xbfMSH|^~\\&|"):
        with pytest.raises(NotHL7):
            decode(raw)


def test_unescape_separators_and_hex() -> None:
    assert unescape(r"Smith\T\Jones\F\x\S\y\R\z\E\w") == "Smith&Jones|x^y~z\\w"
    assert unescape(r"caf\XC3A9\ ok", charset="UNICODE UTF-8") == "café ok"
    assert unescape(r"caf\XE9\ ok", charset="8859/1") == "café ok"
    assert unescape(r"\H\bold\N\ text") == "bold text"
    # declared separators other than the defaults
    assert unescape("a#S#b#T#c", encoding_characters="^~#&", field_separator="!") == "a^b&c"


@pytest.mark.parametrize(("value", "words"), [
    (r"a\XE9\b", "not valid ASCII"),          # a byte ASCII does not define
    (r"a\XC3\b", "not valid"),                # half a UTF-8 character
    (r"a\XE\b", "even number"),
    (r"a\C2842\b", "character set switch"),
    (r"a\.br\b", "not supported"),
    (r"a\Zlocal\b", "not supported"),
    ("a\\F", "unterminated"),
])
def test_unreadable_escapes_raise(value: str, words: str) -> None:
    charset_value = "UNICODE UTF-8" if "C3" in value else ""
    with pytest.raises(BadEscape, match=words):
        unescape(value, charset=charset_value)


def test_a_field_with_a_bad_escape_is_left_out_and_said() -> None:
    text = message("", "Smith", street=r"1 High St\Zx\ ")
    out = map_message(text, load_adt_mapping())
    assert out.refusal is None
    assert out.events[0].person.address_line == ""
    assert [p.field for p in out.degraded] == ["PID-11.1.1"]


def test_escapes_are_read_where_values_are_read() -> None:
    text = message("UNICODE UTF-8", r"O\XE28099\Brien", street=r"Flat 1\T\2\F\ High St")
    out = map_message(text, load_adt_mapping())
    person = out.events[0].person
    assert (person.family_name, person.address_line) == ("O\u2019Brien", "Flat 1&2| High St")


def test_escape_round_trips() -> None:
    for value, cs in (("a|b^c&d~e\\f", ""), ("Zoë Ó", "8859/1"), ("Łukasz \u2019", "UNICODE UTF-8")):
        assert unescape(escape(value, charset=cs), charset=cs) == value
    assert escape("é", charset="UNICODE UTF-8") == r"\XC3A9\ "[:-1]
    with pytest.raises(UnicodeEncodeError):
        escape("Ł", charset="8859/1")


def test_encode_in_the_declared_charset() -> None:
    assert charset.encode("Zoë", "8859/1") == "Zoë".encode("latin-1")
    with pytest.raises(UnknownCharset):
        charset.encode("x", "EBCDIC")
