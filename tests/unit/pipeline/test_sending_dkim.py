"""DKIM on the one send path: digests and confirmations leave signed when a signer is set."""

from __future__ import annotations

import datetime as dt

import pytest

from papermail.delivery.dkim import DkimSigner
from papermail.delivery.dkim_keys import PrivateKey, generate_private_key
from papermail.delivery.memory import MemoryBackend
from papermail.models import SubscriberStatus
from papermail.pipeline.ratelimit import Unlimited
from papermail.pipeline.sending import SendPolicy, send_batch
from papermail.subscribers.confirmations import send_confirmation
from tests.support.dkim import verifies
from tests.unit.pipeline import test_sending
from tests.unit.pipeline.test_sending import World, planned

world = test_sending.world  # the fixture: planned digests of the sample edition

SELECTOR, DOMAIN = "papermail202611", "papers.example.org"


@pytest.fixture(scope="module", params=["rsa", "ed25519"])
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return generate_private_key(request.param)


def send(world: World, ids: list[int], backend: MemoryBackend, key: PrivateKey) -> None:
    report = send_batch(
        world.session,
        delivery_ids=ids,
        backend=backend,
        templates=world.templates(),
        limiter=Unlimited(),
        links=world.links,
        identity=world.identity,
        policy=SendPolicy(),
        clock=world.clock,
        sign=DkimSigner(key, selector=SELECTOR, domain=DOMAIN),
    )
    assert report.sent == len(ids)


def test_every_digest_of_a_batch_carries_a_signature_that_verifies(
    world: World, key: PrivateKey
) -> None:
    ids = planned(world, 3)
    backend = MemoryBackend()
    send(world, ids, backend, key)
    assert len(backend.outbox) == 3
    for message in backend.outbox:
        assert message.data.startswith(b"DKIM-Signature: ")
        assert message.dot_safe and b"\r\n." not in message.data  # SMTP can still skip stuffing
        assert verifies(message.data, selector=SELECTOR, domain=DOMAIN, key=key)
        tampered = message.data.replace(b"List-Unsubscribe: <", b"List-Unsubscribe: <x", 1)
        assert not verifies(tampered, selector=SELECTOR, domain=DOMAIN, key=key)


def test_without_a_signer_digests_go_unsigned(world: World) -> None:
    ids = planned(world, 1)
    backend = MemoryBackend()
    world.send(ids, backend)
    assert b"DKIM-Signature" not in backend.outbox[0].data


def test_a_confirmation_is_signed_too(world: World, key: PrivateKey) -> None:
    subscriber = world.subscribe("new@example.org", status=SubscriberStatus.PENDING)
    backend = MemoryBackend()
    sent = send_confirmation(
        world.session,
        subscriber_id=subscriber.id,
        env=world.env,
        links=world.links,
        identity=world.identity,
        backend=backend,
        now=dt.datetime(2026, 11, 27, 7, 0, tzinfo=dt.UTC),
        sign=DkimSigner(key, selector=SELECTOR, domain=DOMAIN),
    )
    assert sent
    (message,) = backend.outbox
    assert verifies(message.data, selector=SELECTOR, domain=DOMAIN, key=key)
