"""The reference of the gate's anchor floor (``models.gate``): the bootstrap adapter's
accuracy on the task's anchor set, carried in signed manifests.

``streamtune bootstrap`` measures it when it builds the bootstrap and writes it into the
bootstrap's manifest metrics; every adapter the trainer promotes carries its live parent's
forward in its own. The trainer reads it from the live manifest, which it verifies anyway:
a restart changes nothing, and nobody without a trusted signing key can move the floor. The
anchor set's size travels with it: a reference measured on another anchor set is not used.

Where the live manifest carries none (an adapter signed before the reference existed, or a
rollback to one), the trainer follows the signed parent links (:func:`chain_reference`) to
the first manifest that carries one, or to the chain's bootstrap, whose anchor accuracy it
then measures from the bootstrap's verified blob. A chain that starts at the seed model has
no bootstrap, so no floor: the per-promotion tolerance still bounds each step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from schemas.messages import SEED_VERSION, AdapterManifest

ACCURACY = "anchor_reference_accuracy"
EXAMPLES = "anchor_reference_examples"


def carried(metrics: Mapping[str, float], examples: int) -> float | None:
    """The reference in ``metrics``, if it was measured on an anchor set of ``examples``.

    >>> carried({ACCURACY: 0.85, EXAMPLES: 300}, 300), carried({ACCURACY: 0.85, EXAMPLES: 600}, 300)
    (0.85, None)
    >>> carried({}, 300) is None
    True
    """
    value, size = metrics.get(ACCURACY), metrics.get(EXAMPLES)
    if value is None or size is None or int(size) != examples:
        return None
    return float(value)


def carry(reference: float | None, examples: int) -> dict[str, float]:
    """The metrics that carry ``reference`` forward into a manifest (none without one).

    >>> carry(0.8433333333, 300)
    {'anchor_reference_accuracy': 0.843333, 'anchor_reference_examples': 300}
    >>> carry(None, 300)
    {}
    """
    if reference is None:
        return {}
    return {ACCURACY: round(reference, 6), EXAMPLES: examples}


def is_bootstrap(manifest: AdapterManifest) -> bool:
    """A bootstrap adapter's manifest (``streamtune bootstrap``): named ``bootstrap-…``
    (``models.bootstrap.cached_file``), on top of the seed model, not from a train job."""
    return (
        manifest.version.startswith("bootstrap-")
        and manifest.parent_version in (None, SEED_VERSION)
        and manifest.job_id is None
        and not manifest.revert_to_base
    )


def chain_reference(
    live: AdapterManifest, published: Iterable[AdapterManifest], examples: int
) -> tuple[float | None, AdapterManifest | None]:
    """Follow the parent links from ``live`` through the signed ``published`` manifests:
    ``(reference, None)`` at the first manifest that carries one, ``(None, bootstrap)`` at
    a bootstrap that carries none (its anchor accuracy is the reference, to be measured),
    ``(None, None)`` where the chain reaches the seed model or a version not published."""
    by_version = {m.version: m for m in published}
    node: AdapterManifest | None = live
    seen: set[str] = set()
    while node is not None and node.version not in seen:
        seen.add(node.version)
        reference = carried(node.metrics, examples)
        if reference is not None:
            return reference, None
        if is_bootstrap(node):
            return None, node
        if node.parent_version in (None, SEED_VERSION):
            break
        node = by_version.get(node.parent_version)
    return None, None
