"""Human review: a queue with leases in Redis, a REST API and a keyboard-first web UI.

Items routed to `review` are taken by people one lease at a time; each answer goes to
`answers` (the audit trail) and, once an item is decided, a gold `Correction` and a
human-revised `Prediction` go to Kafka before the reviewer hears back.
"""
