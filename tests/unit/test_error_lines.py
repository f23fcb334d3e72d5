"""The one mapping from failures to one-line messages (``streamtune.cli.errors``).

The broker side of authentication and authorisation is proven against a SASL broker by the
security tests; here each aiokafka error class maps to a line that names the fix."""

from __future__ import annotations

import pytest
from aiokafka import errors as kafka

from streamtune.cli.errors import explain
from streamtune.core.errors import BrokerError

ENV = {"STREAMTUNE_BOOTSTRAP_SERVERS": "broker-1:9094", "STREAMTUNE_TOPIC_PREFIX": "p-"}


@pytest.mark.parametrize(
    ("error", "needles"),
    [
        (
            kafka.SaslAuthenticationFailed(),
            ("refused the login", "STREAMTUNE_SASL_USERNAME", "broker-1:9094"),
        ),
        (kafka.AuthenticationFailedError(), ("refused the login",)),
        (kafka.IllegalSaslStateError(), ("refused the login",)),
        (kafka.UnsupportedSaslMechanismError(), ("refused the login", "STREAMTUNE_SASL_MECHANISM")),
        (kafka.TopicAuthorizationFailedError(), ("denied access to a topic", "acls apply")),
        (kafka.GroupAuthorizationFailedError(), ("denied access to a consumer group",)),
        (kafka.ClusterAuthorizationFailedError(), ("denied a cluster operation",)),
        (kafka.TransactionalIdAuthorizationFailed(), ("denied a cluster operation",)),
        (
            kafka.KafkaConnectionError("Unable to bootstrap"),
            ("no Kafka broker answers at broker-1:9094",),
        ),
        (
            kafka.UnknownTopicOrPartitionError(),
            ("does not exist", "'p-'", "streamtune topics create"),
        ),
        (kafka.NotEnoughReplicasError(), ("in-sync replicas", "STREAMTUNE_MIN_INSYNC_REPLICAS")),
        (kafka.KafkaTimeoutError(), ("did not answer in time", "STREAMTUNE_REQUEST_TIMEOUT_MS")),
        (ConnectionRefusedError(), ("did not answer", "streamtune kafka start")),
        (BrokerError("port 9092 is in use"), ("port 9092 is in use",)),
        (ExceptionGroup("one", [kafka.KafkaConnectionError()]), ("no Kafka broker answers",)),
    ],
)
def test_each_failure_a_person_can_fix_is_one_line(error, needles):
    line = explain(error, ENV)
    assert line is not None and "\n" not in line
    for needle in needles:
        assert needle in line, line


def test_a_bug_keeps_its_traceback():
    assert explain(ZeroDivisionError(), ENV) is None
    assert explain(KeyError("x"), ENV) is None
