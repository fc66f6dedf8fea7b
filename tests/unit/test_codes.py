"""Codes: every conversion round-trips, Hamming is right, and MIH cannot miss within 11 bits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastichash import codes

long_codes = st.binary(min_size=codes.LONG_BYTES, max_size=codes.LONG_BYTES)
short_codes = st.binary(min_size=codes.SHORT_BYTES, max_size=codes.SHORT_BYTES)


@given(long_codes)
def test_bits_bytes_round_trip(code: bytes) -> None:
    bits = codes.bytes_to_bits(code)
    assert bits.shape == (codes.LONG_BITS,)
    assert codes.bits_to_bytes(bits).tobytes() == code


@given(long_codes)
def test_hex_round_trip_accepts_upper_case_and_prefix(code: bytes) -> None:
    text = codes.to_hex(code)
    assert len(text) == 64
    assert codes.from_hex(text) == code
    assert codes.from_hex("0x" + text.upper()) == code


@given(long_codes)
def test_words_round_trip_and_are_signed_msb_first(code: bytes) -> None:
    words = codes.to_words(code)
    assert all(-(1 << 63) <= w < (1 << 63) for w in words)
    assert codes.from_words(words) == code
    # MSB-first two's complement: the first bit of the code is the sign of r0
    assert (words[0] < 0) == bool(code[0] & 0x80)
    assert int.from_bytes(code[:8], "big", signed=True) == words[0]
    vec = codes.words_array(np.frombuffer(code, np.uint8)[None, :])
    assert vec.tolist() == [words]


@given(st.lists(st.integers(0, (1 << 64) - 1), min_size=4, max_size=4))
def test_unsigned_words_map_to_the_same_code_as_signed(words: list[int]) -> None:
    signed = [w - (1 << 64) if w >= (1 << 63) else w for w in words]
    assert codes.from_words(words) == codes.from_words(signed)


@given(short_codes)
def test_subcodes_round_trip_msb_first(short: bytes) -> None:
    subs = codes.subcodes(short)
    assert all(0 <= s < 65536 for s in subs)
    assert subs[0] == int.from_bytes(short[:2], "big")
    assert codes.from_subcodes(subs) == short
    assert codes.subcodes_array(np.frombuffer(short, np.uint8)[None, :]).tolist() == [subs]


@given(long_codes, long_codes)
def test_hamming_counts_differing_bits(a: bytes, b: bytes) -> None:
    expected = sum(
        x != y for x, y in zip(codes.bytes_to_bits(a), codes.bytes_to_bits(b), strict=True)
    )
    assert codes.hamming(a, b) == expected
    many = codes.hamming_many(a, np.frombuffer(b + a, np.uint8).reshape(2, -1))
    assert many.tolist() == [expected, 0]


@given(long_codes, st.lists(st.integers(0, 255), min_size=64, max_size=64, unique=True))
def test_select_bits_picks_positions_in_order(code: bytes, positions: list[int]) -> None:
    bits = codes.bytes_to_bits(code)
    picked = codes.select_bits(code, positions)
    assert codes.bytes_to_bits(picked).tolist() == [int(bits[p]) for p in positions]


def test_radius_masks_are_the_137_distinct_masks_of_weight_at_most_two() -> None:
    masks = codes.radius_masks()
    assert len(masks) == 137 == len(set(masks.tolist()))
    assert all(int(m).bit_count() <= 2 for m in masks)
    assert masks[0] == 0
    assert codes.neighbours(0xFFFF)[0] == 0xFFFF


@settings(max_examples=300)
@given(short_codes, st.sets(st.integers(0, 63), max_size=codes.mih_guarantee_radius()))
def test_mih_finds_every_code_within_distance_eleven(query: bytes, flips: set[int]) -> None:
    assert codes.mih_guarantee_radius() == 11
    bits = codes.bytes_to_bits(query).copy()
    bits[list(flips)] ^= 1
    other = codes.bits_to_bytes(bits).tobytes()
    assert codes.hamming(query, other) == len(flips)
    q_subs, o_subs = codes.subcodes(query), codes.subcodes(other)
    assert any(o in set(codes.neighbours(q)) for q, o in zip(q_subs, o_subs, strict=True))


def test_mih_bound_is_tight_at_twelve() -> None:
    # three flips in each 16-bit block: distance 12, no subcode within radius 2
    flips = [i * 16 + j for i, j in itertools.product(range(4), range(3))]
    bits = np.zeros(64, np.uint8)
    bits[flips] = 1
    other = codes.bits_to_bytes(bits).tobytes()
    assert not any(o in codes.neighbours(0) for o in codes.subcodes(other))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: codes.from_hex("abc"), "64 hex digits"),
        (lambda: codes.from_hex("zz" * 32), "not a hex string"),
        (lambda: codes.from_words([1, 2, 3]), "4 words"),
        (lambda: codes.from_words([1 << 64, 0, 0, 0]), "does not fit"),
        (lambda: codes.from_subcodes([1 << 16, 0, 0, 0]), "16-bit"),
        (lambda: codes.to_words(b"\x00" * 8), "32 bytes"),
        (lambda: codes.hamming(b"\x00" * 8, b"\x00" * 32), "differ in length"),
    ],
)
def test_malformed_codes_are_refused_with_a_reason(call: object, message: str) -> None:
    with pytest.raises(codes.CodeError, match=message):
        call()  # type: ignore[operator]
