"""A Merkle tree over the event log, as RFC 6962 (Certificate Transparency) defines it.

Leaves are the stored events in notification order. A leaf's bytes are the canonical encoding
of what the store holds for it: originator id, version, topic and the stored (encrypted) state,
so hashing never needs plaintext, and erasing a person (destroying their key) changes no leaf.

    leaf hash = SHA-256(0x00 || leaf bytes)
    node hash = SHA-256(0x01 || left || right)
    the root of n leaves splits at k, the largest power of two smaller than n

Written by hand (about a hundred lines) rather than taken from a package: the algorithms are
short and fully specified, the known-answer tests pin them to RFC 6962's published vectors, and
the one maintained Python package for CT proofs brings a web of dependencies for the same code.
Proof verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from uuid import UUID

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_bytes(originator_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    """The canonical bytes of one stored event: id (16 bytes), version (8, big-endian), the
    topic's length (4) and UTF-8 bytes, then the stored state to the end. (A state that is not
    bytes, as when someone rewrites the row as text or NULL, is taken as the bytes it reads as,
    so verification names the position instead of failing.)"""
    t = topic.encode("utf-8")
    if not isinstance(state, bytes | bytearray | memoryview):
        state = b"" if state is None else str(state).encode("utf-8", "surrogatepass")
    return originator_id.bytes + struct.pack(">QI", version, len(t)) + t + bytes(state)


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class RootBuilder:
    """The root of a growing log, one leaf hash at a time, in memory logarithmic in its size
    (a stack of the roots of complete subtrees, as in RFC 6962's compact ranges)."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        node, n = leaf, self.size
        while n & 1:  # merge completed subtrees of equal size
            node = node_hash(self._stack.pop(), node)
            n >>= 1
        self._stack.append(node)
        self.size += 1

    def state(self) -> tuple[int, bytes]:
        """What is needed to carry on later: the size, and the subtree roots concatenated."""
        return self.size, b"".join(self._stack)

    @classmethod
    def from_state(cls, size: int, stack: bytes) -> RootBuilder:
        builder = cls()
        builder.size = size
        builder._stack = [stack[i:i + 32] for i in range(0, len(stack), 32)]
        assert len(builder._stack) == bin(size).count("1"), "a stack has one root per set bit"
        return builder

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes."""
    builder = RootBuilder()
    builder.extend(leaves)
    return builder.root()


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]): the audit path of one leaf in the tree of ``size``."""
    if not 0 <= index < size <= len(leaves):
        raise ValueError("index must be below size, and size at most the number of leaves")

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*path(m, lo, lo + k), root(leaves[lo + k:hi])]
        return [*path(m - k, lo + k, hi), root(leaves[lo:lo + k])]

    return path(index, 0, size)


def consistency_proof(leaves: Sequence[bytes], first: int, second: int) -> list[bytes]:
    """RFC 6962 PROOF(first, D[0:second]): that the tree of ``first`` leaves is a prefix of the
    tree of ``second``."""
    if not 0 <= first <= second <= len(leaves):
        raise ValueError("sizes must satisfy 0 <= first <= second <= the number of leaves")
    if first in (0, second):
        return []

    def sub(m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [root(leaves[lo:hi])]
        k = _split(n)
        if m <= k:
            return [*sub(m, lo, lo + k, whole), root(leaves[lo + k:hi])]
        return [*sub(m - k, lo + k, hi, False), root(leaves[lo:lo + k])]

    return sub(first, 0, second, True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     expected_root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` show ``leaf`` at ``index`` in the tree of ``size``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == expected_root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does ``proof`` show the tree of ``first`` is a prefix of ``second``?"""
    if not 0 <= first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the first tree is a subtree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0
