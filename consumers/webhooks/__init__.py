"""Webhooks for DAMs that do not read Kafka (issue 18 item 6, docs/webhooks.md)."""
