"""Kafka plumbing written once: errors, client configs, compacted-topic reading, transactions."""
