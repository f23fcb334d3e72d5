"""One logging configuration per process, set once at its entry point.

``streamtune``'s command line calls :func:`configure_logging` once, with the role of the
command it runs; nothing else sets logger levels for good. What each role shows:

``command`` (one-shot: ``kafka``, ``topics``, ``doctor``, ``status``, ...)
    WARNING and up; aiokafka silent, because the command says in one line of its own what
    went wrong with the broker.
``service`` (``serve``, ``train``)
    streamtune at INFO (swaps, jobs) and aiokafka's warnings about the broker (retries,
    lost leaders).
``monitor``
    streamtune at INFO; aiokafka silent, as for a command.
``worker`` (the Faust worker)
    aiokafka at INFO: it logs every message sent at DEBUG, which stays off.

With ``level=logging.DEBUG`` (``-v``) every logger is left at DEBUG but the worker's aiokafka.
Code that expects aiokafka to complain for one call (a broker that is still starting) wraps
that call in :func:`quiet_aiokafka` instead of changing the level.

>>> aiokafka = logging.getLogger("aiokafka")
>>> before = aiokafka.level
>>> with quiet_aiokafka():
...     aiokafka.level == logging.CRITICAL
True
>>> aiokafka.level == before  # as it was
True
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Role = Literal["command", "service", "monitor", "worker"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: role -> (streamtune's level, aiokafka's level), when not at DEBUG.
_LEVELS: dict[str, tuple[int, int]] = {
    "command": (logging.NOTSET, logging.CRITICAL),
    "service": (logging.INFO, logging.WARNING),
    "monitor": (logging.INFO, logging.CRITICAL),
    "worker": (logging.NOTSET, logging.INFO),
}


def configure_logging(level: int = logging.WARNING, *, role: Role = "command") -> None:
    """Set this process's logging: the root handler and format at ``level``, then the levels
    of streamtune's and aiokafka's loggers for ``role`` (see the module docstring).

    Use: ``configure_logging(logging.DEBUG if args.verbose else logging.WARNING,
    role="service")``, once, before the process does anything else."""
    if role not in _LEVELS:
        raise ValueError(f"unknown logging role {role!r}; roles are: {', '.join(_LEVELS)}")
    logging.basicConfig(level=level, format=FORMAT)
    ours, aiokafka = _LEVELS[role]
    if level <= logging.DEBUG:
        ours = logging.NOTSET
        if role != "worker":  # the worker's aiokafka DEBUG is one line per message sent
            aiokafka = logging.NOTSET
    logging.getLogger("streamtune").setLevel(ours)
    logging.getLogger("aiokafka").setLevel(aiokafka)


@contextmanager
def quiet_aiokafka() -> Iterator[None]:
    """Silence aiokafka for the calls inside, and put its level back after: for probes of a
    broker whose refusals are the expected answer, or that report a failure in a line of
    their own (aiokafka's "Unable connect" would repeat it)."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
