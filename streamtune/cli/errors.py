"""The errors a person meets, as one line that names the fix: the one mapping ``main`` uses.

Each known failure (an invalid setting, a broker that cannot be reached, a topic that was
never created, a refused login or a denied operation) becomes one sentence; ``main`` prints
it after ``streamtune: error:`` and exits with status 2. Anything not listed here is a bug
and keeps its traceback.

>>> from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
>>> explain(KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]"),
...         {"STREAMTUNE_BOOTSTRAP_SERVERS": "127.0.0.1:1"})  # doctest: +ELLIPSIS
'no Kafka broker answers at 127.0.0.1:1; start one (`streamtune kafka start`) or set ...'
>>> explain(TopicAuthorizationFailedError(), {})  # doctest: +ELLIPSIS
"the broker denied access to a topic (TOPIC_AUTHORIZATION_FAILED); ask ..."
>>> explain(KeyError("x"), {}) is None
True
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from aiokafka import errors as kafka
from pydantic import ValidationError

from streamtune.core.errors import StreamtuneError

#: Settings whose values are never echoed back.
_SECRET_WORDS = ("password", "secret", "signing_key")

_LOGIN = (
    "check STREAMTUNE_SASL_USERNAME, STREAMTUNE_SASL_PASSWORD (or _FILE) and "
    "STREAMTUNE_SASL_MECHANISM against the broker's users"
)
_ACL = "ask the cluster's operator to grant it (see `streamtune acls apply`), or use that principal's credentials"


def explain(exc: BaseException, env: Mapping[str, str] | None = None) -> str | None:
    """One line for a failure a person can fix, or None for anything else (a bug)."""
    env = os.environ if env is None else env
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return explain(exc.exceptions[0], env)
    if isinstance(exc, ValidationError):
        return _invalid_setting(exc) if exc.title == "Settings" else None
    if isinstance(exc, StreamtuneError):
        return str(exc)
    if isinstance(exc, kafka.KafkaError):
        return _kafka(exc, env)
    if isinstance(exc, ConnectionError | asyncio.TimeoutError | TimeoutError):
        return f"{_where(env)} did not answer ({type(exc).__name__}); {_start_or_point(env)}"
    return None


def _bootstrap(env: Mapping[str, str]) -> str:
    return env.get("STREAMTUNE_BOOTSTRAP_SERVERS") or (
        f"{env.get('STREAMTUNE_KAFKA_HOST', '127.0.0.1')}:{env.get('STREAMTUNE_KAFKA_PORT', '9092')}"
    )


def _where(env: Mapping[str, str]) -> str:
    return f"the Kafka broker at {_bootstrap(env)}"


def _start_or_point(env: Mapping[str, str]) -> str:
    return (
        "start one (`streamtune kafka start`) or set STREAMTUNE_BOOTSTRAP_SERVERS "
        "(or --bootstrap-servers) to a broker that runs"
    )


def _kafka(exc: kafka.KafkaError, env: Mapping[str, str]) -> str:
    prefix = env.get("STREAMTUNE_TOPIC_PREFIX", "")
    code = getattr(exc, "message", "") or type(exc).__name__
    if isinstance(exc, kafka.KafkaConnectionError | kafka.NoBrokersAvailable):
        return f"no Kafka broker answers at {_bootstrap(env)}; {_start_or_point(env)}"
    if isinstance(exc, kafka.UnknownTopicOrPartitionError):
        return (
            f"a topic this command needs does not exist at {_bootstrap(env)} "
            f"(topic prefix {prefix!r}); create them with `streamtune topics create` "
            "using the same STREAMTUNE_TOPIC_PREFIX"
        )
    if isinstance(
        exc,
        kafka.SaslAuthenticationFailed
        | kafka.AuthenticationFailedError
        | kafka.IllegalSaslStateError
        | kafka.UnsupportedSaslMechanismError
        | kafka.AuthenticationMethodNotSupported,
    ):
        return f"the broker at {_bootstrap(env)} refused the login ({code}); {_LOGIN}"
    if isinstance(exc, kafka.TopicAuthorizationFailedError):
        return f"the broker denied access to a topic ({code}); {_ACL}"
    if isinstance(exc, kafka.GroupAuthorizationFailedError):
        return f"the broker denied access to a consumer group ({code}); {_ACL}"
    if isinstance(
        exc,
        kafka.ClusterAuthorizationFailedError
        | kafka.TransactionalIdAuthorizationFailed
        | kafka.DelegationTokenAuthorizationFailed,
    ):
        return f"the broker denied a cluster operation ({code}); {_ACL}"
    if isinstance(exc, kafka.NotEnoughReplicasError | kafka.NotEnoughReplicasAfterAppendError):
        return (
            f"too few in-sync replicas to accept a write ({code}); bring the stopped brokers "
            "back, or lower STREAMTUNE_MIN_INSYNC_REPLICAS for new topics"
        )
    if isinstance(exc, kafka.KafkaTimeoutError | kafka.RequestTimedOutError):
        return f"{_where(env)} did not answer in time ({code}); check that it runs and is reachable, or raise STREAMTUNE_REQUEST_TIMEOUT_MS"
    return f"Kafka error {code}: {exc}; check the broker at {_bootstrap(env)} and its logs"


def _invalid_setting(exc: ValidationError) -> str:
    """Name the environment variable of each invalid field, and what a valid value is."""
    parts = []
    for err in exc.errors()[:5]:
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across fields: its message names the variables
            parts.append(msg)
            continue
        name = str(err["loc"][0])
        var = f"STREAMTUNE_{name.upper()}"
        value = err.get("input")
        shown = "" if any(w in name for w in _SECRET_WORDS) else f"={str(value)[:60]!r}"
        parts.append(f"{var}{shown}: {msg}")
    return "invalid setting " + "; ".join(parts) + "; fix or unset it (see docs/configuration.md)"
