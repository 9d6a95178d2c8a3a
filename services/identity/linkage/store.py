"""What the identity service remembers: local-record mappings, blocking indexes and person profiles.

The faust service will back ``IdentityStore`` with tables; ``MemoryStore`` is the in-process
dict implementation used by tests, the accuracy bench and training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from .features import Encoding

PROFILE_CAP: Final = 8  # distinct encoding variants kept per person
_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class Profile:
    """The distinct encoding variants seen for one person, at most PROFILE_CAP of them.

    A person's organisations key their details differently (typos, a new postcode), so a new
    record is compared with each variant and the best agreement counts. When full, the oldest
    variant but the first is dropped: the first is the founding record, the rest the most recent.
    """

    variants: tuple[Encoding, ...] = ()

    def with_variant(self, encoding: Encoding) -> Profile:
        """This profile with ``encoding`` added; the same object when it is already there."""
        if encoding in self.variants:
            return self
        kept = self.variants
        if len(kept) >= PROFILE_CAP:
            kept = kept[:1] + kept[2:]
        return Profile((*kept, encoding))

    def to_bytes(self) -> bytes:
        out = bytearray((_FORMAT, len(self.variants)))
        for variant in self.variants:
            out += variant.to_bytes()
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Profile:
        if len(data) < 2 or data[0] != _FORMAT:
            raise ValueError("not a profile (unknown format)")
        view, pos = memoryview(data), 2
        variants = []
        for _ in range(data[1]):
            variant, pos = Encoding.read(view, pos)
            variants.append(variant)
        if pos != len(data):
            raise ValueError("trailing bytes after profile")
        return cls(tuple(variants))


class IdentityStore(Protocol):
    """The state the linker reads and writes; keys and ids are opaque strings (no identifier values)."""

    def local_person(self, org: str, local_id: str) -> str | None: ...
    def set_local_person(self, org: str, local_id: str, person_id: str) -> None: ...
    def block(self, key: str) -> list[str]: ...
    def add_to_block(self, key: str, person_id: str) -> None: ...
    def profile(self, person_id: str) -> Profile | None: ...
    def set_profile(self, person_id: str, profile: Profile) -> None: ...


class MemoryStore:
    """Dicts in this process. A block with one person holds the id itself, not a list, to save memory."""

    def __init__(self) -> None:
        self._local: dict[tuple[str, str], str] = {}
        self._blocks: dict[str, str | list[str]] = {}
        self._profiles: dict[str, Profile] = {}

    def local_person(self, org: str, local_id: str) -> str | None:
        return self._local.get((org, local_id))

    def set_local_person(self, org: str, local_id: str, person_id: str) -> None:
        self._local[(org, local_id)] = person_id

    def block(self, key: str) -> list[str]:
        held = self._blocks.get(key)
        if held is None:
            return []
        return [held] if isinstance(held, str) else list(held)

    def add_to_block(self, key: str, person_id: str) -> None:
        add_to_index(self._blocks, key, person_id)

    def profile(self, person_id: str) -> Profile | None:
        return self._profiles.get(person_id)

    def set_profile(self, person_id: str, profile: Profile) -> None:
        self._profiles[person_id] = profile

    def __len__(self) -> int:
        """Known persons."""
        return len(self._profiles)


def add_to_index(index: dict[str, str | list[str]], key: str, person_id: str, cap: int | None = None) -> bool:
    """Add ``person_id`` to the block ``key`` of an in-memory blocking index; False when the block
    already holds ``cap`` people. A block of one person holds the id itself, not a list: most
    blocking keys have one person, and a list each would double the index's memory."""
    held = index.get(key)
    if held is None:
        index[key] = person_id
    elif isinstance(held, str):
        if held != person_id:
            index[key] = [held, person_id]
    elif person_id not in held:
        if cap is not None and len(held) >= cap:
            return False
        held.append(person_id)
    return True
