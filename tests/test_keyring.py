"""The keyring's cache of unwrapped data keys: bound to the owner each key was
opened for, and small enough to hold tens of thousands of subjects."""

from __future__ import annotations

import sys

import pytest

from conftest import anonymous_kb, open_store
from facebank.errors import DataCorruption


@pytest.fixture
def keyring(tmp_path):
    store = open_store(tmp_path / "d")
    yield store.keyring
    store.close()


def test_a_remembered_key_is_not_handed_to_another_owner(keyring):
    """The cache answered by slot alone: a row naming another subject's slot got that
    subject's key while it was remembered, and a check failure only once it was not."""
    first, second = keyring.allocate([b"identity:1", b"identity:2"])
    assert keyring.open(first.slot, b"identity:1") is not None
    with pytest.raises(DataCorruption, match=f"key slot {first.slot} failed its check"):
        keyring.open(first.slot, b"identity:2")
    blob = first.seal(b"face", b"aad")
    assert keyring.open(first.slot, b"identity:1").open(blob, b"aad") == b"face"   # still remembered for its owner
    assert keyring.open(second.slot, b"identity:2").seal(b"x", b"y") != blob


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_remembered_keys_cost_their_bytes_not_a_cipher_each(keyring):
    """An AESGCM object holds an OpenSSL context of about 2.4 KB: 20,000 remembered keys
    took 50 MB and more of anonymous memory (65,536 of them, the cache's size, 160 MB)."""
    owners = [b"identity:%d" % i for i in range(20_000)]
    before = anonymous_kb()
    keys = keyring.allocate(owners)
    grown = anonymous_kb() - before
    assert grown < 16 * 1024, f"{grown} KB for 20,000 remembered keys"
    blob = keys[-1].seal(b"face", b"aad")
    assert keyring.open(keys[-1].slot, owners[-1]).open(blob, b"aad") == b"face"
