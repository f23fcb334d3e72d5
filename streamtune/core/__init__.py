"""The bottom layer every room builds on: settings, errors, Kafka client factories, topic
administration, the one whole-topic reader, the validating consumer and the local broker.

It imports only ``schemas``; ``streams``, ``models`` and the processes import it.
"""
