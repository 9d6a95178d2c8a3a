"""A data file's copy, broken by one edit, must be refused with an error naming the file and the entry."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from carehub.domain.loader import DefinitionError


def assert_broken_copy_refused(source: Path, path: Path, load: Callable[[Path], object], old: str, new: str,
                               expected: str) -> None:
    """Copy ``source`` to ``path``; it loads; with ``old`` (once in it) made ``new`` it is refused with
    ``expected`` after the file's path."""
    shutil.copy(source, path)
    load(path)  # the copy loads before the edit: the edit is what breaks it
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new))
    with pytest.raises(DefinitionError, match=f"(?m)^{re.escape(str(path))}: {expected}") as info:
        load(path)
    assert info.value.path == str(path)
