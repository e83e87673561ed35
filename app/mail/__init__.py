"""Outgoing mail: the transactional outbox (``outbox.enqueue``), its transports (SMTP,
files) and the delivery worker. A use case that changes state and owes a person a mail
enqueues the mail in its own transaction; nothing is sent on the request path."""
