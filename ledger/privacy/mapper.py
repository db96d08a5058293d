"""The mapper that seals personal fields with the participant's own data key.

Layering on the way to the store: personal fields -> AES-GCM with the participant's data key
(bound to participant, topic and field) -> JSON -> AES-GCM of the whole state with the at-rest key.
On the way back the fields stay sealed: commands never need personal data, so replaying and caching
aggregates never opens it. (An aggregate a command has just given personal data in plaintext is not
cached at all: ``Ledger._forget_plaintext``.) A view that shows a field opens it with ``revealer()``;
a field whose key was destroyed reads as ``REDACTED``, so replay and views never fail because someone
was erased.
"""

from __future__ import annotations

import base64
import copy
import secrets
from collections.abc import Callable
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import (
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoding,
)
from eventsourcing.utils import TopicError, get_topic

from ..domain import REDACTED
from ..domain.base import personal_fields
from ..domain.errors import ParticipantErased
from .keystore import DataKeyStore


class Sealed:
    """A personal field's ciphertext, as stored and as held by aggregates read from the store;
    once read, it also knows whose it is and where it came from (needed to open it)."""

    __slots__ = ("ciphertext", "subject", "topic", "field")

    def __init__(self, ciphertext: bytes, subject: UUID | None = None, topic: str = "",
                 field: str = "") -> None:
        self.ciphertext, self.subject, self.topic, self.field = ciphertext, subject, topic, field

    def __repr__(self) -> str:
        return "SEALED"


class SealedAsBase64(Transcoding):
    """JSON transcoding for ``Sealed`` values."""

    type = Sealed
    name = "sealed"

    def encode(self, obj: Sealed) -> str:
        return base64.b64encode(obj.ciphertext).decode()

    def decode(self, data: str) -> Sealed:
        return Sealed(base64.b64decode(data))


def _aad(subject: UUID, topic: str, field: str) -> bytes:
    return subject.bytes + f"|{topic}|{field}".encode()


class PersonalDataMapper(Mapper[UUID]):
    """A Mapper that seals and unseals the personal fields declared in the domain."""

    keys: DataKeyStore | None = None  # attached by the application once the store exists

    def _subject(self, event: Any, subject_attr: str) -> UUID:
        return getattr(event, subject_attr)

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        """Seal personal fields, then let the library encode and encrypt the whole state."""
        spec = personal_fields(type(domain_event))
        if spec is None or all(getattr(domain_event, f) is None for f in spec.fields):
            return super().to_stored_event(domain_event)
        assert self.keys is not None
        subject = self._subject(domain_event, spec.subject)
        key = self.keys.get(subject)
        if key is None:
            raise ParticipantErased("this participant's data has been erased")
        aead, topic = AESGCM(key), get_topic(type(domain_event))
        sealed = copy.copy(domain_event)
        for field in spec.fields:
            value = getattr(domain_event, field)
            if value is None:
                continue
            nonce = secrets.token_bytes(12)
            plaintext = self.transcoder.encode(value)
            ciphertext = nonce + aead.encrypt(nonce, plaintext, _aad(subject, topic, field))
            object.__setattr__(sealed, field, Sealed(ciphertext))
        return super().to_stored_event(sealed)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        """Decrypt and decode; personal fields stay sealed, labelled so a view can open them.
        A stored event that is not one of the ledger's (another topic, or a state that does not
        fit its topic's class) is ``MapperDeserialisationError``, as a changed ciphertext is:
        the library would otherwise import whatever module a stored topic names, and fail in
        ways that name no position."""
        if not (isinstance(stored_event.topic, str) and stored_event.topic.startswith("ledger:")):
            raise MapperDeserialisationError("not one of the ledger's topics")
        try:
            event = super().to_domain_event(stored_event)
        except MapperDeserialisationError:
            raise
        except (TopicError, TypeError, ValueError, AttributeError, KeyError) as error:
            raise MapperDeserialisationError(type(error).__name__) from None
        spec = personal_fields(type(event))
        if spec is None:
            return event
        subject = self._subject(event, spec.subject)
        for field in spec.fields:
            value = getattr(event, field)
            if isinstance(value, Sealed):
                value.subject, value.topic, value.field = subject, stored_event.topic, field
        return event

    def revealer(self, people: list[UUID] | None = None) -> Callable[[Any], Any]:
        """A function that opens sealed values (anything else passes through), looking each
        person's key up once: use one per view. ``people``: fetch their keys now, in one query
        (a page of a list)."""
        assert self.keys is not None
        keys, transcoder = self.keys, self.transcoder
        aeads: dict[UUID, AESGCM | None] = {
            pid: AESGCM(key) if key is not None else None
            for pid, key in (keys.get_many(people) if people else {}).items()}

        def reveal(value: Any) -> Any:
            if not isinstance(value, Sealed):
                return value
            assert value.subject is not None
            if value.subject not in aeads:
                key = keys.get(value.subject)
                aeads[value.subject] = AESGCM(key) if key is not None else None
            aead = aeads[value.subject]
            if aead is None:
                return REDACTED
            c = value.ciphertext
            return transcoder.decode(
                aead.decrypt(c[:12], c[12:], _aad(value.subject, value.topic, value.field)))
        return reveal
