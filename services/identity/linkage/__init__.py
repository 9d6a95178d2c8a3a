"""Probabilistic record linkage over pseudonymised persons (Fellegi-Sunter, EM-trained weights).

    linker = Linker(load_model("v1"), MemoryStore())
    decision = linker.decide(org, person)          # pure: reads the store only
    linker.remember(org, person, decision.person_id or new_random_id())

Method and reference figures: docs/linkage.md.
"""

from .features import FIELDS, LEVELS, Encoding, compare
from .linker import Decision, Linker, Outcome, blocking_keys_of
from .model import LinkageModel, load_model, load_model_file
from .store import PROFILE_CAP, IdentityStore, MemoryStore, Profile

__all__ = [
    "FIELDS",
    "LEVELS",
    "PROFILE_CAP",
    "Decision",
    "Encoding",
    "IdentityStore",
    "LinkageModel",
    "Linker",
    "MemoryStore",
    "Outcome",
    "Profile",
    "blocking_keys_of",
    "compare",
    "load_model",
    "load_model_file",
]
