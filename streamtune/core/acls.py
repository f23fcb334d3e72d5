"""The broker ACLs that the topic access table (``schemas.topic_access``) implies, and
applying them with the admin client.

>>> s = Settings(topic_prefix="t-")
>>> lines = [b.describe() for b in acl_bindings(s)]
>>> "ALLOW User:trainer WRITE topic t-model-updates" in lines
True
>>> [line for line in lines if "WRITE topic t-model-updates" in line]
['ALLOW User:trainer WRITE topic t-model-updates']
>>> "ALLOW User:serve READ group streamtune-serve" in lines
True
>>> [line for line in lines if "User:monitor" in line and "topic" not in line]
['ALLOW User:monitor DESCRIBE group t- (prefix)', 'ALLOW User:monitor DESCRIBE group streamtune-serve', 'ALLOW User:monitor DESCRIBE group streamtune-train']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.topic_access import READS, ROLES, WRITES
from streamtune.core.clients import make_admin
from streamtune.core.errors import StreamtuneError
from streamtune.core.settings import Settings

# Kafka protocol codes (org.apache.kafka.common.acl / resource).
_RESOURCE = {"topic": 2, "group": 3, "cluster": 4}
_PATTERN = {"literal": 3, "prefixed": 4}
_OPERATION = {"ALL": 2, "READ": 3, "WRITE": 4, "CREATE": 5, "DESCRIBE": 8}
_ALLOW = 3


class AclError(StreamtuneError, RuntimeError):
    """The broker refused to create an ACL (not authorised, no authorizer configured, ...)."""


@dataclass(frozen=True)
class AclBinding:
    """One ALLOW rule: ``principal`` may do ``operation`` on a resource."""

    principal: str
    operation: Literal["ALL", "READ", "WRITE", "CREATE", "DESCRIBE"]
    resource: Literal["topic", "group", "cluster"]
    name: str
    pattern: Literal["literal", "prefixed"] = "literal"

    def describe(self) -> str:
        suffix = " (prefix)" if self.pattern == "prefixed" else ""
        return f"ALLOW {self.principal} {self.operation} {self.resource} {self.name}{suffix}"


def principals(settings: Settings) -> dict[str, str]:
    """Role -> principal, from ``STREAMTUNE_ACL_<ROLE>_PRINCIPAL``."""
    return {role: getattr(settings, f"acl_{role}_principal") for role in ROLES}


def acl_bindings(settings: Settings) -> list[AclBinding]:
    """Every ALLOW rule the access table implies under this prefix; anything else is denied
    (the broker runs an authorizer with ``allow.everyone.if.no.acl.found=false``)."""
    who = principals(settings)
    out: list[AclBinding] = []
    for topic, roles in WRITES.items():
        out += [AclBinding(who[r], "WRITE", "topic", settings.topic(topic)) for r in roles]
    for topic, roles in READS.items():
        out += [AclBinding(who[r], "READ", "topic", settings.topic(topic)) for r in roles]
    # Consumer groups (offsets are committed there), and the worker's own internal topics,
    # which Faust creates itself (changelogs, the assignor's leader topic).
    worker_id = settings.topic_prefix + settings.worker_app_id
    out += [
        AclBinding(who["worker"], "READ", "group", worker_id, "prefixed"),
        AclBinding(who["worker"], "ALL", "topic", f"{worker_id}-", "prefixed"),
        AclBinding(who["serve"], "READ", "group", settings.serve_group_id),
        AclBinding(who["trainer"], "READ", "group", settings.train_group_id),
    ]
    return out + monitor_bindings(settings, who["monitor"])


def monitor_bindings(settings: Settings, principal: str) -> list[AclBinding]:
    """What the monitor needs beyond reading its topics, to show each group's lag: DESCRIBE
    (list and fetch committed offsets, never commit) on streamtune's groups, and DESCRIBE
    (end offsets) on the worker's internal topics, whose offsets the worker's group commits.

    >>> [b.describe() for b in monitor_bindings(Settings(), "User:m")][0]
    'ALLOW User:m DESCRIBE group streamtune-worker (prefix)'
    """
    worker_id = settings.topic_prefix + settings.worker_app_id
    # watched_groups: the configured groups, and any group named with the prefix.
    groups = [AclBinding(principal, "DESCRIBE", "group", worker_id, "prefixed")]
    if settings.topic_prefix:  # the prefix covers the worker's group too
        groups = [AclBinding(principal, "DESCRIBE", "group", settings.topic_prefix, "prefixed")]
    return [
        *groups,
        AclBinding(principal, "DESCRIBE", "group", settings.serve_group_id),
        AclBinding(principal, "DESCRIBE", "group", settings.train_group_id),
        AclBinding(principal, "DESCRIBE", "topic", f"{worker_id}-", "prefixed"),
    ]


def acl_matrix(settings: Settings) -> str:
    """The topic x role table of what each role may do (R, W, RW or -), for people."""
    who = principals(settings)
    width = max(len(t) for t in WRITES) + len(settings.topic_prefix)
    head = f"{'topic':<{width}}  " + "  ".join(f"{r:<8}" for r in ROLES)
    rows = [head, "-" * len(head)]
    for topic in WRITES:
        cells = [
            ("R" if role in READS[topic] else "") + ("W" if role in WRITES[topic] else "") or "-"
            for role in ROLES
        ]
        rows.append(f"{settings.topic(topic):<{width}}  " + "  ".join(f"{c:<8}" for c in cells))
    rows.append("principals: " + ", ".join(f"{r}={p}" for r, p in who.items()))
    return "\n".join(rows)


async def apply_acls(settings: Settings, bindings: list[AclBinding]) -> int:
    """Create ``bindings`` on the broker (idempotent: an existing rule is left as it is).
    Needs a principal allowed to alter the cluster's ACLs (a super user)."""
    from aiokafka.protocol.admin import CreateAclsRequest

    admin = make_admin(settings)
    await admin.start()
    try:
        for b in bindings:
            request = CreateAclsRequest(
                _RESOURCE[b.resource], b.name, _PATTERN[b.pattern], b.principal, "*",
                _OPERATION[b.operation], _ALLOW,
            )  # fmt: skip
            response = await admin._send_request(request)  # aiokafka has no public create_acls
            for code, message in response.creation_responses:
                if code != 0:
                    raise AclError(
                        f"the broker refused `{b.describe()}` (error {code}: {message}); "
                        "apply ACLs as a super user of a broker that runs an authorizer"
                    )
    finally:
        await admin.close()
    return len(bindings)
