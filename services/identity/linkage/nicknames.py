"""Known nicknames ("Bill" for William, "Peggy" for Margaret), as data, and their keyed form for the linker.

The list ships as ``services/identity/weights/nicknames.json``: groups of names that are one given
name written two ways. The linker never sees a name, only keyed encodings, so it is handed the list
already keyed (:func:`keyed_nicknames`): for each pair of names in a group, the pair of their keyed
Bloom filters, made with the same pseudonymiser (the same hub key) as the records. A record whose
given name is a known nickname of the candidate's then scores as a phonetic agreement, and the
given-name hazard rule (``linker.py``) does not count it as a disagreement.

The exact spelling is matched, not the phonetic code: short names share codes too easily ("Leo",
a short form of Leonard, and "Lee" are both L), and a nickname mistyped as well is two errors.

What the keyed pairs reveal to whoever holds them: which keyed encodings are nicknames of one
another, a small graph over the commonest names. The identity service holds the hub key already
(its person ids are keyed by it), so this gives it nothing it could not compute.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Final

from carehub.domain.pseudonymise import Pseudonymiser, normalise_name
from carehub.v1 import care_event_pb2 as ce

FILE_NAME: Final = "nicknames.json"
_ALLOWED_EXTRA: Final = frozenset(" -'")
_ANY_DAY: Final = date(2000, 1, 1)  # the encodings of a name do not depend on the day


@dataclass(frozen=True, slots=True)
class NicknameGroups:
    """Validated groups of names, each name normalised as the pseudonymiser normalises it."""

    source: str
    groups: tuple[tuple[str, ...], ...]

    def pairs(self) -> set[frozenset[str]]:
        """Every pair of different names that share a group."""
        return {frozenset((a, b)) for g in self.groups for a in g for b in g if a != b}


def parse_nicknames(doc: Any, source: str) -> NicknameGroups:
    """Check a nickname document; an error names ``source`` and the group (and name) at fault."""
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ValueError(f"{source}: expected an object with a 'groups' list")
    groups: list[tuple[str, ...]] = []
    for i, group in enumerate(doc["groups"]):
        where = f"{source}: group {i + 1}"
        if not isinstance(group, list) or len(group) < 2:
            raise ValueError(f"{where}: expected a list of at least two names, got {group!r}")
        names: list[str] = []
        for name in group:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{where} ({group[0]!r}): {name!r} is not a name")
            if not all(c.isalpha() or c in _ALLOWED_EXTRA for c in name.strip()):
                raise ValueError(f"{where} ({group[0]!r}): {name!r} has characters other than letters")
            normalised = normalise_name(name)
            if not normalised:
                raise ValueError(f"{where} ({group[0]!r}): {name!r} has no letters the pseudonymiser keeps")
            if normalised in names:
                raise ValueError(f"{where} ({group[0]!r}): {name!r} appears twice")
            names.append(normalised)
        groups.append(tuple(names))
    return NicknameGroups(source, tuple(groups))


def load_nicknames(path: str | Path | None = None) -> NicknameGroups:
    """The shipped list (``services/identity/weights/nicknames.json``), or the file at ``path``."""
    if path is None:
        service_package = __name__.rsplit(".linkage", 1)[0]
        source = f"services/identity/weights/{FILE_NAME}"
        text = resources.files(service_package).joinpath("weights", FILE_NAME).read_text(encoding="utf-8")
    else:
        source = str(path)
        text = Path(path).read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_nicknames(doc, source)


class KeyedNicknames:
    """Nickname pairs as pairs of keyed Bloom filters (as ints, as ``Encoding`` holds them): no name."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[int, int]]) -> None:
        self._pairs = frozenset((min(a, b), max(a, b)) for a, b in pairs if a and b and a != b)

    def __len__(self) -> int:
        return len(self._pairs)

    def known(self, a: int, b: int) -> bool:
        """Whether the given names with keyed Bloom filters ``a`` and ``b`` are known nicknames of each other."""
        return (a, b) in self._pairs if a < b else (b, a) in self._pairs


def keyed_nicknames(groups: NicknameGroups, pseudonymiser: Pseudonymiser) -> KeyedNicknames:
    """The groups keyed by ``pseudonymiser``, which must hold the key the records were encoded with."""
    code: dict[str, int] = {}
    for group in groups.groups:
        for name in group:
            if name not in code:
                person = ce.Person(local_id="nickname", given_name=name)
                code[name] = int.from_bytes(pseudonymiser.encode(person, _ANY_DAY).given_name_bloom, "big")
    return KeyedNicknames((code[a], code[b]) for pair in groups.pairs() for a, b in [tuple(pair)])
