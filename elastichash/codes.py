"""Binary hash codes: conversions, Hamming distance and multi-index hashing masks.

Canonical in-memory form of a code is MSB-first packed bytes (``numpy.packbits`` order):
a long code is 32 bytes (256 bits), a short code 8 bytes (64 bits). Every other form
(bits, hex, the four signed int64 words ``r0..r3`` of ElasticHash, the four 16-bit
subcodes ``f0..f3``) converts to and from it here and nowhere else.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from functools import cache

import numpy as np
import numpy.typing as npt

LONG_BITS = 256
SHORT_BITS = 64
LONG_BYTES = LONG_BITS // 8
SHORT_BYTES = SHORT_BITS // 8
WORD_BITS = 64
NUM_WORDS = LONG_BITS // WORD_BITS
SUBCODE_BITS = 16
NUM_SUBCODES = SHORT_BITS // SUBCODE_BITS
MIH_RADIUS = 2

U8 = npt.NDArray[np.uint8]


class CodeError(ValueError):
    """A code has the wrong length, alphabet or type."""


# --- bits <-> bytes ---------------------------------------------------------------------


def bits_to_bytes(bits: npt.ArrayLike) -> U8:
    """Pack an array of 0/1 (or bool) values, last axis MSB-first, into bytes."""
    arr = np.asarray(bits)
    if arr.shape[-1] % 8:
        raise CodeError(f"bit count {arr.shape[-1]} is not a multiple of 8")
    return np.packbits(arr.astype(bool), axis=-1)


def bytes_to_bits(code: npt.ArrayLike | bytes) -> U8:
    """Unpack bytes into 0/1 values, MSB-first."""
    arr = as_array(code)
    return np.unpackbits(arr, axis=-1)


def as_array(code: npt.ArrayLike | bytes) -> U8:
    """Return a code as a uint8 array, accepting ``bytes`` or any uint8 array."""
    if isinstance(code, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(code), dtype=np.uint8)
    arr = np.asarray(code)
    if arr.dtype != np.uint8:
        raise CodeError(f"expected uint8 bytes, got dtype {arr.dtype}")
    return arr


def binarize(values: npt.ArrayLike) -> U8:
    """Model pre-activations to packed bits: a bit is 1 where the value is > 0."""
    return np.packbits(np.asarray(values) > 0, axis=-1)


# --- hex ---------------------------------------------------------------------------------


def to_hex(code: npt.ArrayLike | bytes) -> str:
    return as_array(code).tobytes().hex()


def from_hex(text: str, nbits: int = LONG_BITS) -> bytes:
    """Parse a hex code of exactly ``nbits`` bits (case-insensitive, optional ``0x``)."""
    s = text.strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    if len(s) != nbits // 4:
        raise CodeError(f"a {nbits}-bit code has {nbits // 4} hex digits, got {len(s)}")
    try:
        return bytes.fromhex(s)
    except ValueError as exc:
        raise CodeError(f"not a hex string: {exc}") from None


# --- ElasticHash's words: r0..r3 signed int64, f0..f3 uint16 ----------------------------


_WORDS = struct.Struct(f">{NUM_WORDS}q")
_SUBCODES = struct.Struct(f">{NUM_SUBCODES}H")


def to_words(code: npt.ArrayLike | bytes) -> list[int]:
    """Long code -> four signed int64 words, MSB-first, two's complement (``r0..r3``)."""
    if isinstance(code, bytes) and len(code) == LONG_BYTES:
        return list(_WORDS.unpack(code))  # the bulk path: one document at a time
    arr = as_array(code)
    if arr.shape != (LONG_BYTES,):
        raise CodeError(f"a long code is {LONG_BYTES} bytes, got shape {arr.shape}")
    return [int(w) for w in arr.view(">i8")]


def words_array(codes: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """(N, 32) uint8 codes -> (N, 4) int64 words, vectorised."""
    arr = np.ascontiguousarray(codes, dtype=np.uint8)
    return arr.view(">i8").astype(np.int64)


def from_words(words: Sequence[int]) -> bytes:
    """Four signed (or unsigned) 64-bit words -> 32-byte long code."""
    if len(words) != NUM_WORDS:
        raise CodeError(f"a long code is {NUM_WORDS} words, got {len(words)}")
    out = bytearray()
    for w in words:
        w = int(w)
        if not -(1 << 63) <= w < (1 << 64):
            raise CodeError(f"word {w} does not fit in 64 bits")
        out += (w & ((1 << 64) - 1)).to_bytes(8, "big")
    return bytes(out)


def subcodes(short: npt.ArrayLike | bytes) -> list[int]:
    """64-bit short code -> four 16-bit subcodes ``f0..f3``, MSB-first."""
    if isinstance(short, bytes) and len(short) == SHORT_BYTES:
        return list(_SUBCODES.unpack(short))
    arr = as_array(short)
    if arr.shape != (SHORT_BYTES,):
        raise CodeError(f"a short code is {SHORT_BYTES} bytes, got shape {arr.shape}")
    return [int(v) for v in arr.view(">u2")]


def subcodes_array(shorts: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """(N, 8) uint8 short codes -> (N, 4) uint16 subcodes, vectorised."""
    arr = np.ascontiguousarray(shorts, dtype=np.uint8)
    return arr.view(">u2").astype(np.uint16)


def from_subcodes(values: Sequence[int]) -> bytes:
    if len(values) != NUM_SUBCODES:
        raise CodeError(f"a short code is {NUM_SUBCODES} subcodes, got {len(values)}")
    for v in values:
        if not 0 <= int(v) < (1 << SUBCODE_BITS):
            raise CodeError(f"subcode {v} is not a 16-bit value")
    return b"".join(int(v).to_bytes(2, "big") for v in values)


def select_bits(long_codes: npt.ArrayLike, positions: Sequence[int]) -> U8:
    """Pick bit ``positions`` (MSB-first indices into the long code) as a packed code.

    Works on one code (32,) or many (N, 32); the result keeps the order of ``positions``.
    """
    bits = np.unpackbits(as_array(long_codes), axis=-1)
    return np.packbits(bits[..., list(positions)], axis=-1)


# --- Hamming ------------------------------------------------------------------------------


def hamming(a: npt.ArrayLike | bytes, b: npt.ArrayLike | bytes) -> int:
    x, y = as_array(a), as_array(b)
    if x.shape != y.shape:
        raise CodeError(f"codes differ in length: {x.shape} vs {y.shape}")
    return int(np.bitwise_count(np.bitwise_xor(x, y)).sum())


def hamming_many(query: npt.ArrayLike | bytes, codes: npt.ArrayLike) -> npt.NDArray[np.int32]:
    """Distances from one query code to each row of ``codes`` (N, nbytes)."""
    q = as_array(query)
    c = np.asarray(codes, dtype=np.uint8)
    if c.ndim != 2 or c.shape[1] != q.shape[-1]:
        raise CodeError(f"codes must be (N, {q.shape[-1]}), got {c.shape}")
    nbytes = q.shape[-1]
    if nbytes % 8 == 0:
        # 64-bit lanes: 4x fewer popcounts than bytewise.
        qw = np.ascontiguousarray(q).view(np.uint64)
        cw = np.ascontiguousarray(c).view(np.uint64)
        out: npt.NDArray[np.int32] = np.bitwise_count(cw ^ qw).sum(axis=1, dtype=np.int32)
        return out
    out = np.bitwise_count(c ^ q).sum(axis=1, dtype=np.int32)
    return out


# --- multi-index hashing ------------------------------------------------------------------


@cache
def radius_masks(nbits: int = SUBCODE_BITS, radius: int = MIH_RADIUS) -> npt.NDArray[np.uint32]:
    """All XOR masks of weight <= ``radius`` on ``nbits`` bits, by weight then value.

    For 16 bits and radius 2: 1 + 16 + 120 = 137 masks.
    """
    masks: list[int] = [0]
    for r in range(1, radius + 1):
        for combo in itertools.combinations(range(nbits), r):
            masks.append(sum(1 << i for i in combo))
    ordered = sorted(masks, key=lambda m: (m.bit_count(), m))
    out = np.array(ordered, dtype=np.uint32)
    out.setflags(write=False)
    return out


def neighbours(subcode: int, nbits: int = SUBCODE_BITS, radius: int = MIH_RADIUS) -> list[int]:
    """Every value within Hamming ``radius`` of ``subcode`` (itself first)."""
    if not 0 <= subcode < (1 << nbits):
        raise CodeError(f"subcode {subcode} is not a {nbits}-bit value")
    return [int(subcode ^ m) for m in radius_masks(nbits, radius)]


def mih_guarantee_radius(
    num_subcodes: int = NUM_SUBCODES, radius: int = MIH_RADIUS
) -> int:
    """Largest full-code distance at which MIH with these parameters cannot miss a code.

    By pigeonhole, a code at distance d from the query has some subcode within
    floor(d / m) of the query's; so d <= m * (r + 1) - 1 is always found.
    """
    return num_subcodes * (radius + 1) - 1
