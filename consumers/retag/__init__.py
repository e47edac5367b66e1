"""Tags again from stored scores, without a model: thresholds, a taxonomy, ``tagfleet retag``."""
