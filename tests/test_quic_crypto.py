"""The QUIC Initial key derivation's primitives (ext/dpi/quic_crypto.h) against independent references:
hashlib/hmac for SHA-256 and HMAC, the FIPS-197 appendix C.1 vector for AES-128; both the CPU-extension
paths (SHA-NI, AES-NI, chosen through CPUID) and the portable C paths."""
from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from dpi import _flowtable as ft


@pytest.mark.parametrize("portable", [False, True])
def test_sha256_matches_hashlib(portable):
    rng = random.Random(5)
    for n in [0, 1, 55, 56, 63, 64, 65, 119, 128, 1000, 4099]:
        data = bytes(rng.randrange(256) for _ in range(n))
        assert ft._crypto_sha256(data, portable) == hashlib.sha256(data).digest(), n


def test_hmac_matches_stdlib():
    key, msg = b"k" * 20, b"flowtap" * 30
    assert ft._crypto_hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


@pytest.mark.parametrize("portable", [False, True])
def test_aes128_fips197_vector(portable):
    key = bytes(range(16))
    pt = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert ft._crypto_aes128(key, pt, portable).hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
