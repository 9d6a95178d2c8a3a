"""Probabilistic record linkage over pseudonymised persons (Fellegi-Sunter, EM-trained weights).

    linker = Linker(load_model(), MemoryStore(), nicknames=keyed_nicknames(load_nicknames(), pseudonymiser))
    decision = linker.decide(org, person)          # pure: reads the store only
    linker.remember(org, person, decision.person_id or new_random_id())

Method and reference figures: docs/linkage.md.
"""

from .features import FIELDS, LEVELS, Encoding, compare, demographics_fingerprint
from .linker import Decision, Linker, Outcome, blocking_keys_of
from .model import LinkageModel, load_model, load_model_file
from .nicknames import KeyedNicknames, keyed_nicknames, load_nicknames
from .store import PROFILE_CAP, IdentityStore, MemoryStore, Profile

__all__ = [
    "FIELDS",
    "LEVELS",
    "PROFILE_CAP",
    "Decision",
    "Encoding",
    "IdentityStore",
    "KeyedNicknames",
    "LinkageModel",
    "Linker",
    "MemoryStore",
    "Outcome",
    "Profile",
    "blocking_keys_of",
    "compare",
    "demographics_fingerprint",
    "keyed_nicknames",
    "load_model",
    "load_model_file",
    "load_nicknames",
]
