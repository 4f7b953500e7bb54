"""Bounce and complaint webhooks: POST /webhooks/ses (SNS) and POST /webhooks/postmark.

Thin: authenticate and parse (papermail.bounces.sns, .postmark), hand the reports to the
processor (bounce_stages.take_bounce_reports), answer. A webhook not configured is a
404. The answers say what happened in JSON, for the provider's delivery log:

- 200: taken (stored, already seen, or refused by the processor for a reason that a retry
  would not change, such as an unknown address);
- 400: not a message of that provider; 401 (Postmark): wrong credentials; 403 (SES): the
  signature, certificate or topic did not check out; 5xx (the database): try again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from papermail import bounce_stages
from papermail.bounces import postmark, sns
from papermail.bounces.processor import Outcome
from papermail.bounces.reports import Refused
from papermail.clock import Clock, utcnow
from papermail.models import BounceSource
from papermail.wiring import Wiring

log = logging.getLogger(__name__)
router = APIRouter()


@dataclass
class Webhooks:
    wiring: Wiring
    clock: Clock = utcnow
    # Made on the first SES message: fetches SNS certificates and visits SubscribeURLs.
    http: httpx.Client | None = None
    certs: sns.SigningCerts | None = None

    def signing_certs(self) -> sns.SigningCerts:
        if self.certs is None:
            self.http = self.http or self.wiring.http_client()
            self.certs = sns.SigningCerts(self.http, clock=self.clock)
        return self.certs


def attach_webhooks(
    app: FastAPI, *, wiring: Wiring, http: httpx.Client | None = None, clock: Clock = utcnow
) -> Webhooks:
    """Include the routes; ``http`` is for tests (an httpx.MockTransport)."""
    hooks = Webhooks(wiring=wiring, clock=clock, http=http)
    app.state.webhooks = hooks
    app.include_router(router)
    return hooks


def _hooks(request: Request) -> Webhooks:
    hooks: Webhooks = request.app.state.webhooks
    return hooks


def _answer(outcome: Outcome) -> JSONResponse:
    return JSONResponse(
        {
            "status": "ok" if outcome.accepted or not outcome.refused else "ignored",
            "stored": outcome.stored,
            "duplicates": outcome.duplicates,
            "refused": outcome.refused,
        }
    )


def _refused(status: int, reason: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"status": "refused", "reason": reason}, status_code=status, headers=headers
    )


@router.post("/webhooks/ses", include_in_schema=False)
async def ses(request: Request) -> JSONResponse:
    hooks = _hooks(request)
    topics = hooks.wiring.settings.ses_topics
    if not topics:
        return _refused(404, "SES webhook not configured (PAPERMAIL_SES_TOPIC_ARNS)")
    body = await request.body()
    return await run_in_threadpool(_ses, hooks, body, topics)


def _ses(hooks: Webhooks, body: bytes, topics: frozenset[str]) -> JSONResponse:
    try:
        certs = hooks.signing_certs()
        message = sns.verify(body, certs=certs, topics=topics, now=hooks.clock())
    except Refused as refused:
        log.warning("SES webhook refused: %s", refused.reason)
        status = 503 if isinstance(refused, sns.Unavailable) else 400
        return _refused(403 if isinstance(refused, sns.Unauthentic) else status, refused.reason)
    if message.type == "SubscriptionConfirmation":
        try:
            sns.confirm_subscription(message, client=certs.client)
        except Refused as refused:
            log.warning(
                "SNS subscription to %s not confirmed: %s", message.topic_arn, refused.reason
            )
            return _refused(502, refused.reason)
        log.warning("SNS subscription to %s confirmed", message.topic_arn)
        return JSONResponse({"status": "subscribed"})
    if message.type != "Notification":
        return JSONResponse({"status": "ignored", "reason": message.type})
    try:
        reports = sns.reports(message)
    except Refused as refused:
        return _refused(400, refused.reason)
    outcome = bounce_stages.take_bounce_reports(
        hooks.wiring, reports, source=BounceSource.SES, clock=hooks.clock
    )
    return _answer(outcome)


@router.post("/webhooks/postmark", include_in_schema=False)
async def postmark_hook(request: Request) -> JSONResponse:
    hooks = _hooks(request)
    s = hooks.wiring.settings
    if not (s.postmark_webhook_username and s.postmark_webhook_password):
        return _refused(404, "Postmark webhook not configured")
    if not postmark.authorized(
        request.headers.get("authorization"),
        username=s.postmark_webhook_username,
        password=s.postmark_webhook_password.get_secret_value(),
    ):
        log.warning("Postmark webhook refused: wrong or missing credentials")
        return _refused(401, "wrong credentials", **{"WWW-Authenticate": 'Basic realm="papermail"'})
    body = await request.body()
    try:
        reports = postmark.reports(body)
    except Refused as refused:
        return _refused(400, refused.reason)
    outcome = await run_in_threadpool(
        bounce_stages.take_bounce_reports,
        hooks.wiring,
        reports,
        source=BounceSource.POSTMARK,
        clock=hooks.clock,
    )
    return _answer(outcome)
