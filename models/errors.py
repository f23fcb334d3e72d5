"""Errors of the models room."""

from __future__ import annotations

import torch

from streamtune.core.errors import StreamtuneError


class AdapterRejected(StreamtuneError, ValueError):
    """An adapter failed verification or a compatibility check; the live model stays.

    ``kind`` is a short code: ``tampered``, ``unsigned``, ``unknown_key``, ``bad_signature``,
    ``incompatible``, ``malformed``, ``non_finite`` or ``stale`` (a replayed manifest older than
    the live one: see ``streamtune.model_updates.sequence``).
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


def require_finite(what: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or :class:`AdapterRejected` (``non_finite``) if it holds NaN or infinity.

    >>> require_finite("tensor w", torch.tensor([float("nan")]))
    Traceback (most recent call last):
    ...
    models.errors.AdapterRejected: non_finite: tensor w holds NaN or infinity
    """
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise AdapterRejected("non_finite", f"{what} holds NaN or infinity")
    return tensor
