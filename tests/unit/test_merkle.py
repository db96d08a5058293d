"""The Merkle tree against RFC 6962's published vectors, and its proofs in every tree shape."""

from __future__ import annotations

import hashlib
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit.merkle import (
    EMPTY_ROOT,
    RootBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_bytes,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency reference data (RFC 6962 test vectors, as published with the
# reference implementations): eight leaves, and the root of the first n of them.
DATA = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]
LEAVES = [leaf_hash(d) for d in DATA]
H = bytes.fromhex
INCLUSION = [  # (index, size, path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
CONSISTENCY = [  # (first, second, proof)
    (2, 8, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def naive_root(leaves: list[bytes]) -> bytes:
    """MTH exactly as RFC 6962 section 2.1 writes it, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def test_roots_match_rfc_6962_for_every_size():
    assert EMPTY_ROOT == ROOTS[0]
    for n in range(len(DATA) + 1):
        assert root(LEAVES[:n]) == ROOTS[n], n


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_rfc_6962(index, size, path):
    assert inclusion_proof(LEAVES, index, size) == [H(p) for p in path]
    assert verify_inclusion(LEAVES[index], index, size, [H(p) for p in path], ROOTS[size])


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proofs_match_rfc_6962(first, second, proof):
    assert consistency_proof(LEAVES, first, second) == [H(p) for p in proof]
    assert verify_consistency(first, second, ROOTS[first], ROOTS[second], [H(p) for p in proof])


MANY = [leaf_hash(bytes([i, i * 7 % 256])) for i in range(40)]


def test_the_incremental_root_equals_the_recursive_definition_at_every_size():
    builder = RootBuilder()
    for n in range(len(MANY) + 1):
        assert builder.root() == naive_root(MANY[:n]) == root(MANY[:n])
        if n < len(MANY):
            builder.append(MANY[n])


def test_every_inclusion_proof_verifies_and_nothing_wrong_does():
    for size in range(1, len(MANY) + 1):
        tree_root = root(MANY[:size])
        for index in range(size):
            proof = inclusion_proof(MANY, index, size)
            assert verify_inclusion(MANY[index], index, size, proof, tree_root)
            assert not verify_inclusion(MANY[index], index, size, proof, ROOTS[1])
            assert not verify_inclusion(MANY[(index + 1) % 40], index, size, proof, tree_root)
            # An index outside the tree, however the rest is made, is refused.
            for outside in (size, size + 1, -1, -size):
                assert not verify_inclusion(MANY[index], outside, size, proof, tree_root)
            longer = [*proof, proof[0] if proof else MANY[0]]  # one element too many
            assert not verify_inclusion(MANY[index], index, size, longer, tree_root)
            if size > 1:
                if (index ^ 1) < size:
                    assert not verify_inclusion(MANY[index], index ^ 1, size, proof, tree_root)
                bad = [*proof[:-1], bytes(32)]
                assert not verify_inclusion(MANY[index], index, size, bad, tree_root)
                assert not verify_inclusion(MANY[index], index, size, proof[:-1], tree_root)
                # A leaf passed off as the root of a bigger tree, with an empty proof.
                assert not verify_inclusion(MANY[index], index, size, [], MANY[index])


def test_a_leaf_is_not_the_root_of_a_bigger_tree_and_no_index_lies_outside_its_tree():
    assert verify_inclusion(MANY[0], 0, 1, [], MANY[0])  # a tree of one: the leaf is the root
    assert not verify_inclusion(MANY[0], 0, 2, [], MANY[0])
    assert not verify_inclusion(MANY[0], 1, 1, [], MANY[0])
    assert not verify_inclusion(MANY[0], -1, 1, [], MANY[0])
    assert not verify_inclusion(MANY[0], 0, 0, [], MANY[0])


def test_every_consistency_proof_verifies_and_nothing_wrong_does():
    roots = [root(MANY[:n]) for n in range(len(MANY) + 1)]
    for second in range(1, len(MANY) + 1):
        for first in range(1, second + 1):
            proof = consistency_proof(MANY, first, second)
            assert verify_consistency(first, second, roots[first], roots[second], proof)
            # The second tree is not the first's: a fork, whatever the sizes.
            other = roots[second - 1] if second > 1 else roots[2]
            assert not verify_consistency(first, second, roots[first], other, proof)
            if first == second:  # same size: the roots must be the same, and nothing proved
                assert not verify_consistency(first, second, roots[first], roots[first - 1], [])
                assert not verify_consistency(first, second, roots[first], roots[first],
                                              [roots[first]])
            assert not verify_consistency(first, second, roots[first], roots[second],
                                          [*proof, roots[first]])  # one element too many
            if first < second:  # the sizes the wrong way round
                assert not verify_consistency(second, first, roots[second], roots[first], proof)
                assert not verify_consistency(first, second, roots[first - 1], roots[second],
                                              proof)
                assert not verify_consistency(first, second, roots[first], roots[second - 1],
                                              proof)
                assert not verify_consistency(first, second, roots[first], roots[second],
                                              [*proof[:-1], bytes(32)])
                assert not verify_consistency(first, second, roots[first], roots[second], [])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=70), st.data())
def test_proofs_hold_for_any_leaves(data, draw):
    leaves = [leaf_hash(d) for d in data]
    size = draw.draw(st.integers(1, len(leaves)))
    index = draw.draw(st.integers(0, size - 1))
    first = draw.draw(st.integers(1, size))
    assert verify_inclusion(leaves[index], index, size, inclusion_proof(leaves, index, size),
                            root(leaves[:size]))
    assert verify_consistency(first, size, root(leaves[:first]), root(leaves[:size]),
                              consistency_proof(leaves, first, size))


def test_leaf_bytes_are_unambiguous():
    a = UUID(int=1)
    assert leaf_bytes(a, 1, "ab", b"c") != leaf_bytes(a, 1, "a", b"bc")
    assert leaf_bytes(a, 1, "t", b"") != leaf_bytes(a, 256, "t", b"")
    assert leaf_bytes(a, 2, "t", b"s") == a.bytes + (2).to_bytes(8, "big") + b"\x00\x00\x00\x01ts"
