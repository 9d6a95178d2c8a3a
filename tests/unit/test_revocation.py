"""The certificate deny list (carehub/revocation.py): its formats, its errors, and re-reading it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carehub.revocation import RevocationList, RevocationListError, fingerprint_der, parse

FP = fingerprint_der(b"a certificate")


def test_formats_a_list_may_be_written_in() -> None:
    colons = ":".join(FP[i:i + 2] for i in range(0, 64, 2)).upper()
    text = f"# revoked 2026-12-04\n{FP}\nsha256 Fingerprint={colons}  # openssl's output\n\n"
    assert parse(text, "deny.txt") == {FP}


def test_a_bad_line_is_named() -> None:
    with pytest.raises(RevocationListError, match=r"deny\.txt:2: not a SHA-256"):
        parse(f"{FP}\nnot-a-fingerprint\n", "deny.txt")


def test_the_list_is_read_again_when_it_changes_and_a_bad_edit_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text("# nothing yet\n")
    deny = RevocationList(path)
    assert not deny.revoked(FP)
    path.write_text(f"{FP}\n")
    os.utime(path, ns=(1, 10**18))  # a different mtime even on a coarse clock
    assert deny.revoked(FP)
    path.write_text(f"{FP}\nbroken line\n")
    os.utime(path, ns=(1, 2 * 10**18))
    assert deny.revoked(FP) and len(deny) == 1


def test_nothing_is_revoked_without_a_list_and_a_missing_file_is_an_error(tmp_path: Path) -> None:
    assert not RevocationList(None).revoked(FP)
    with pytest.raises(RevocationListError, match="no such file"):
        RevocationList(tmp_path / "absent.txt")
