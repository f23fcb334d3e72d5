"""streamtune: keep a deployed text model adapted to a live Kafka stream.

This package holds the settings, the Kafka plumbing shared by every process, and the
``streamtune`` CLI that wires ``streams/`` (Faust agents) and ``models/`` (PyTorch) together.
"""

__version__ = "0.1.0"
