"""Adapters on Kafka: the ``model-updates`` records (``records``), publishing a signed adapter
(``publisher``), following the live ones (``follower``), and history and rollback (``history``)."""
