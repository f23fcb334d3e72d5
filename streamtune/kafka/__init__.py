"""Kafka plumbing shared by every streamtune process: clients, topics, the local broker."""
