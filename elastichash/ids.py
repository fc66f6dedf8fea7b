"""Deterministic image ids: a redelivery or re-upload overwrites instead of duplicating."""

from __future__ import annotations

import hashlib
import re

from elastichash.errors import InvalidInput

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def content_id(data: bytes) -> str:
    """128-bit BLAKE2b of the image bytes, hex: collision-free in practice, short in URLs."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def check_id(value: str) -> str:
    """Validate a client-given id: 1-128 chars of [A-Za-z0-9._:-], not starting with a symbol."""
    if not ID_PATTERN.fullmatch(value):  # match() would let a trailing newline through
        raise InvalidInput(
            "id must be 1-128 characters of letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit",
            field="id",
        )
    return value
