"""tagfleet consumers: the event pipeline and service.

Kafka in, S3 fetch, fleet, store, results out.
"""
