"""An index is bound to the model whose codes it holds: the decision every backend makes.

Codes of two models cannot be compared, so an index records the name and fingerprint of its
model when it is first used with one, and refuses another model from then on
(:class:`~elastichash.errors.ModelMismatch`, with a message naming both and what to do). The
embedded index keeps the record in its SQLite ``meta`` table, an engine index in its
mapping's ``_meta``; the rules are here, once.

An index that holds codes but no record was made before models were recorded: its codes are
the descriptor model's (``visual``, the default then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from elastichash.errors import ModelMismatch
from elastichash.model.registry import META_MODEL_NAME as META_MODEL_NAME  # one key, re-exported

# the descriptor model's contract name (registry name "visual"), which made older indexes
LEGACY_SPEC_NAME = "elastichash-default"
META_MODEL_FINGERPRINT = "model_fingerprint"


class ModelIdentity(Protocol):
    """What binding needs of a model: its contract name and fingerprint (a ``ModelSpec``)."""

    @property
    def name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class ModelRef:
    """A model's identity as it travels (the search service's ``PUT /v1/model``)."""

    name: str  # the contract name (ModelSpec.name)
    fingerprint: str


@dataclass(frozen=True)
class Record:
    """What an index records: the model's name as the user gave it, and its fingerprint."""

    name: str
    fingerprint: str


def mismatch(where: str, held: str, held_fp: str, name: str, fp: str, remedy: str) -> str:
    return (
        f"{where} holds codes of model {held!r} ({held_fp}), but the model in use is {name!r} "
        f"({fp}): codes of two models cannot be compared. {remedy}"
    )


def reindex_remedy(name: str, held: str) -> str:
    """What to do about an embedded index (``elastichash reindex`` re-encodes it)."""
    return (f"Run `elastichash reindex --model {name}` to re-encode the images with it, or use "
            f"--model {held}")


def engine_remedy(name: str, held: str) -> str:
    """What to do about an engine index (its images are re-sent, not re-encoded in place)."""
    return (f"Index the images with {name!r} into another index (EH_*_INDEX__ENGINE__INDEX), "
            f"or run every service with the model {held!r} (EH_*_MODEL__MODEL={held})")


def bind(
    recorded_name: str | None, recorded_fp: str | None, has_codes: bool, name: str,
    model: ModelIdentity, where: str, *, engine: bool = False,
) -> Record | None:
    """The record to write now, or None when the stored one stands; ``ModelMismatch`` when
    the index holds another model's codes. ``name`` is how the user named the model (a
    built-in name or a path), ``has_codes`` whether the index holds any document."""
    from elastichash.model import registry

    remedy = engine_remedy if engine else reindex_remedy
    fp, held = recorded_fp, recorded_name
    if fp is None and has_codes:
        if model.name != LEGACY_SPEC_NAME:
            raise ModelMismatch(mismatch(where, registry.LEGACY, "descriptor", name,
                                         model.fingerprint, remedy(name, registry.LEGACY)))
        fp, held = model.fingerprint, registry.LEGACY
    if fp is not None and fp != model.fingerprint:
        held = held or "?"
        raise ModelMismatch(mismatch(where, held, fp, name, model.fingerprint,
                                     remedy(name, held)))
    if recorded_fp is None:
        return Record(held or name, model.fingerprint)
    if held != name and name in registry.BUILTINS:
        return Record(name, model.fingerprint)  # the same model, now named by its registry name
    return None
