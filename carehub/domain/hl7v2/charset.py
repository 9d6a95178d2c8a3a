"""Bytes of one HL7 v2 message to text, by the character set its MSH-18 names; and escapes.

The MSH segment is ASCII-compatible in every character set accepted here: the message starts
``MSH``, the 4th byte is the field separator and MSH-2 the encoding characters, so MSH-18 can be
read from the raw bytes before anything is decoded. Only the first repetition of MSH-18 counts
(the default character set); further repetitions name alternate sets switched to by ``\\C..\\``
or ``\\M..\\`` escapes, which :func:`unescape` refuses.

Nothing is guessed: an MSH-18 value outside :data:`CHARSETS` raises :class:`UnknownCharset`, a
byte that the named character set does not define raises :class:`Undecodable` (never a
replacement character), and an escape sequence this module cannot read raises
:class:`BadEscape`. Spellings are HL7 table 0211's, compared exactly (the table is
case-sensitive), with surrounding spaces ignored.
"""

from __future__ import annotations

import re

# HL7 table 0211 (Alternate Character Sets) -> Python codec. "" is MSH-18 empty: ASCII, the
# table's default. ISO IR6 is the ASCII graphic set. The 8859 parts are single-byte sets whose
# Python codecs decode every byte the standard defines; "UNICODE UTF-8" is v2.5's spelling.
# Not accepted: "UNICODE" (v2.3/2.4, encoding unspecified), UTF-16/32 (MSH is then not ASCII-
# compatible), and the ISO 2022 / Japanese / Chinese / Korean sets (escape-switched).
CHARSETS: dict[str, str] = {
    "": "ascii",
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    **{f"8859/{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
    "UNICODE UTF-8": "utf-8",
}


class CharsetError(ValueError):
    """A message whose text cannot be read: the base of the errors below."""


class NotHL7(CharsetError):
    """The bytes do not start with an MSH segment."""


class UnknownCharset(CharsetError):
    """MSH-18 names a character set that is not in :data:`CHARSETS`."""

    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(f"MSH-18 character set {value!r} is not supported "
                         f"(supported: {', '.join(repr(k) for k in CHARSETS if k)} or empty for ASCII)")


class Undecodable(CharsetError):
    """A byte sequence the declared character set does not define."""

    def __init__(self, charset: str, position: int, reason: str) -> None:
        self.charset, self.position = charset, position
        super().__init__(f"byte {position} is not valid in the declared character set "
                         f"{charset or 'ASCII (MSH-18 empty)'!r}: {reason}")


class BadEscape(CharsetError):
    """An escape sequence that cannot be read (unknown, unterminated, odd hex, charset switch)."""


def msh_fields(raw: bytes) -> list[bytes]:
    """The raw fields of the MSH segment, indexed so that ``fields[n]`` is MSH-n (``fields[0]`` is b"MSH")."""
    if len(raw) < 8 or raw[:3] != b"MSH":
        raise NotHL7("not an HL7 v2 message: it does not start with an MSH segment")
    separator = raw[3:4]
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        at = raw.find(terminator)
        if at != -1:
            end = min(end, at)
    parts = raw[:end].split(separator)
    return [parts[0], separator, *parts[1:]]


def declared_charset(raw: bytes) -> str:
    """MSH-18's first repetition as written (stripped), "" when absent."""
    fields = msh_fields(raw)
    if len(fields) <= 18:
        return ""
    encoding = fields[2]
    repetition = encoding[1:2] or b"~"
    value = fields[18].split(repetition)[0]
    try:
        return value.decode("ascii").strip()
    except UnicodeDecodeError:
        raise UnknownCharset(value.decode("latin-1").strip()) from None


def codec(value: str) -> str:
    """The Python codec for an MSH-18 value, or :class:`UnknownCharset`."""
    found = CHARSETS.get(value.strip())
    if found is None:
        raise UnknownCharset(value)
    return found


def decode(raw: bytes) -> str:
    """The message's text, decoded per its MSH-18; raises a :class:`CharsetError` subclass."""
    value = declared_charset(raw)
    name = codec(value)
    try:
        return raw.decode(name, errors="strict")
    except UnicodeDecodeError as exc:
        raise Undecodable(value, exc.start, exc.reason) from None


def encode(text: str, charset: str) -> bytes:
    """``text`` (an ACK, say) in the character set named by an MSH-18 value, strictly."""
    return text.encode(codec(charset), errors="strict")


def unescape(value: str, encoding_characters: str = "^~\\&", field_separator: str = "|",
             charset: str = "") -> str:
    """``value`` with HL7 escape sequences (v2.5 section 2.7) replaced; :class:`BadEscape` if unreadable.

    Read: ``\\F\\`` ``\\S\\`` ``\\T\\`` ``\\R\\`` ``\\E\\`` (the separators and the escape
    character, as MSH-1/MSH-2 declare them), ``\\Xhh..\\`` (bytes in the message's own character
    set, decoded strictly: ``\\XC3A9\\`` is "é" in a UTF-8 message), and ``\\H\\`` / ``\\N\\``
    (highlighting on / off: dropped, the text is unchanged). Refused: ``\\C..\\`` and ``\\M..\\``
    (character set switches), formatting commands (``\\.br\\``), ``\\Z..\\`` (locally defined),
    and anything unterminated.

    python-hl7's ``Message.unescape`` is not used: it decodes each ``\\X`` byte as one Latin-1
    character (wrong for UTF-8) and drops sequences it cannot read, which would alter a name or
    an identifier without a word.
    """
    chars = (encoding_characters + "^~\\&"[len(encoding_characters):])[:4]
    component, repetition, escape, subcomponent = chars[0], chars[1], chars[2], chars[3]
    if escape not in value:
        return value
    simple = {"F": field_separator, "S": component, "T": subcomponent, "R": repetition, "E": escape,
              "H": "", "N": ""}
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c != escape:
            out.append(c)
            i += 1
            continue
        end = value.find(escape, i + 1)
        if end == -1:
            raise BadEscape(f"unterminated escape sequence at character {i}")
        body = value[i + 1:end]
        if body in simple:
            out.append(simple[body])
        elif body[:1] == "X" and len(body) > 1:
            digits = body[1:]
            if len(digits) % 2 or not re.fullmatch(r"[0-9A-Fa-f]+", digits):
                raise BadEscape(f"\\X escape {body!r} is not an even number of hex digits")
            try:
                out.append(bytes.fromhex(digits).decode(codec(charset), errors="strict"))
            except UnicodeDecodeError as exc:
                raise BadEscape(f"\\X escape {body!r} is not valid {charset or 'ASCII'}: {exc.reason}") from None
        elif body[:1] in ("C", "M"):
            raise BadEscape(f"character set switch \\{body}\\ is not supported")
        else:
            raise BadEscape(f"escape sequence \\{body}\\ is not supported")
        i = end + 1
    return "".join(out)


def escape(value: str, encoding_characters: str = "^~\\&", field_separator: str = "|", charset: str = "") -> str:
    """``value`` made safe to write into a field: separators and the escape character as
    ``\\F\\`` etc., line breaks as ``\\.br\\``, and characters outside printable ASCII as
    ``\\Xhh..\\`` of their bytes in ``charset`` (strict; :class:`UnknownCharset` if unknown).

    python-hl7's ``Message.escape`` writes one ``\\X`` per code point (``%2x``), which is not
    the character's bytes beyond Latin-1; this writes the bytes.
    """
    chars = (encoding_characters + "^~\\&"[len(encoding_characters):])[:4]
    component, repetition, esc, subcomponent = chars[0], chars[1], chars[2], chars[3]
    names = {field_separator: "F", component: "S", subcomponent: "T", repetition: "R", esc: "E"}
    out: list[str] = []
    for c in value:
        if c in names:
            out.append(f"{esc}{names[c]}{esc}")
        elif c in "\r\n":
            out.append(f"{esc}.br{esc}")
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append(f"{esc}X{c.encode(codec(charset), errors='strict').hex().upper()}{esc}")
    return "".join(out)
