"""Late bounces and complaints: what comes back after a message has left.

- ``verp``: each message's envelope sender names its delivery, signed
  (``bounces+d<id>-<mac>@<bounce domain>``), so a bounce finds its delivery and a forged
  one is refused;
- ``reports``: what a bounce says, one ``Report`` per recipient; ``dsn`` reads it from a raw
  message (RFC 3464 DSNs, RFC 5965 ARF complaints, flufl.bounce for the rest), ``sns`` and
  ``postmark`` from their webhooks;
- ``processor``: the one place a report changes anything: it finds the delivery and the
  subscriber, stores the event once (``bounce_events``) and applies the bounce policy
  (``papermail.subscribers.bounces``);
- ``receiver`` (an SMTP/LMTP server) and ``mailbox`` (IMAP/POP3 polling) hand raw
  messages to the processor.
"""
