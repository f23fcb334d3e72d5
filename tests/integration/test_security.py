"""Authentication, authorisation and rollback against a real SASL_SSL broker.

The module starts its own Kafka node (SCRAM-SHA-512 over TLS, the StandardAuthorizer,
nothing allowed without an ACL) on free ports with a data directory under /tmp, makes its own
CA and certificates, applies the ACLs with the real ``streamtune acls apply``, and stops the
node at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from schemas import AdapterEvent
from schemas.topic_access import READS, ROLES, WRITES
from schemas.topics import MODEL_EVENTS, MODEL_UPDATES, TOPIC_NAMES
from streamtune.core.clients import make_consumer, make_producer
from streamtune.core.secure_kafka import BrokerSecurity, SecureLocalKafka
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics
from streamtune.core.topic_reader import read_topic
from streamtune.model_updates.follower import UpdatesFollower
from streamtune.model_updates.history import history
from tests.conftest import REPO, free_port
from tests.kafka_helpers import send_raw
from tests.security_helpers import make_security
from tests.serve_helpers import TASK, make_keys, publish, running_server, trained_blob, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.security]

DENIED_WITHIN_S = 20.0


class Secure:
    """The running node: settings per role, and the CLI environment for a role."""

    def __init__(self, base: Settings, security: BrokerSecurity, root: Path) -> None:
        self.base, self.security, self.root = base, security, root

    def as_role(self, role: str, **overrides: object) -> Settings:
        return self.security.client_settings(self.base, role, **overrides)

    def cli_env(self, role: str) -> dict[str, str]:
        password_file = self.root / f"{role}.password"
        password_file.write_text(self.security.users[role])
        password_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTUNE_")}
        env.update(
            STREAMTUNE_BOOTSTRAP_SERVERS=f"{self.base.kafka_host}:{self.base.kafka_port}",
            STREAMTUNE_TOPIC_PREFIX=self.base.topic_prefix,
            STREAMTUNE_SECURITY_PROTOCOL="SASL_SSL",
            STREAMTUNE_SASL_MECHANISM="SCRAM-SHA-512",
            STREAMTUNE_SASL_USERNAME=role,
            STREAMTUNE_SASL_PASSWORD_FILE=str(password_file),
            STREAMTUNE_SSL_CAFILE=str(self.security.truststore_pem),
        )
        return env


def streamtune(
    env: dict[str, str], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamtune.cli", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def secure() -> Iterator[Secure]:
    root = Path(tempfile.mkdtemp(prefix="streamtune-secure-", dir="/tmp"))
    base = Settings(
        kafka_port=free_port(), kafka_controller_port=free_port(), kafka_data_dir=root / "kafka",
        kafka_heap="384m", topic_prefix="sec-",
    )  # fmt: skip
    security = make_security(root / "pki")
    broker = SecureLocalKafka(base, security)
    try:
        broker.start(timeout_s=150)
        node = Secure(base, security, root)
        asyncio.run(create_topics(node.as_role("admin")))
        applied = streamtune(node.cli_env("admin"), "acls", "apply")
        assert applied.returncode == 0, applied.stderr
        assert "ALLOW User:trainer WRITE topic sec-model-updates" in applied.stdout
        yield node
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _try_write(settings: Settings, topic: str) -> str:
    """'ok', or the name of the error the broker answered with."""
    producer = make_producer(settings, request_timeout_ms=int(DENIED_WITHIN_S * 1000))
    try:
        await asyncio.wait_for(producer.start(), DENIED_WITHIN_S)
        await asyncio.wait_for(
            producer.send_and_wait(settings.topic(topic), b"{}", key=b"probe"), DENIED_WITHIN_S
        )
        return "ok"
    except (TimeoutError, KafkaError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await producer.stop()


async def _read_back(settings: Settings, topic: str) -> tuple[bool, int]:
    """(whether the topic is visible to this principal, records read from its start)."""
    from aiokafka import TopicPartition

    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        visible = settings.topic(topic) in await consumer.topics()
        consumer.assign([TopicPartition(settings.topic(topic), 0)])
        batch = await consumer.getmany(timeout_ms=3000)
        return visible, sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()


def test_every_role_writes_exactly_the_topics_the_table_gives_it(secure):
    async def matrix() -> dict[tuple[str, str], str]:
        return {
            (role, topic): await _try_write(secure.as_role(role), topic)
            for role in ROLES
            for topic in TOPIC_NAMES
        }

    outcome = asyncio.run(matrix())
    allowed = {(role, topic) for topic, roles in WRITES.items() for role in roles}
    for (role, topic), result in outcome.items():
        if (role, topic) in allowed:
            assert result == "ok", (role, topic, result)
        else:
            assert "Authorization" in result, (role, topic, result)
    # the three the issue names
    assert {t for (r, t) in allowed if r == "producer"} == {"interactions", "feedback"}
    assert {r for (r, t) in allowed if t == MODEL_UPDATES} == {"trainer"}
    assert outcome[("serve", MODEL_UPDATES)] != "ok"


def test_serve_reads_model_updates_and_the_producer_does_not(secure):
    assert "serve" in READS[MODEL_UPDATES] and "producer" not in READS[MODEL_UPDATES]
    assert asyncio.run(_try_write(secure.as_role("trainer"), MODEL_UPDATES)) == "ok"
    assert asyncio.run(_read_back(secure.as_role("serve"), MODEL_UPDATES)) >= (True, 1)
    # Denied, the topic is not even visible, and nothing can be fetched from it.
    assert asyncio.run(_read_back(secure.as_role("producer"), MODEL_UPDATES)) == (False, 0)


def test_a_wrong_password_is_refused(secure, caplog):
    wrong = secure.as_role("producer", sasl_password="not-the-password")
    # aiokafka raises "Unable to bootstrap" and logs the broker's reason.
    assert asyncio.run(_try_write(wrong, "interactions")).startswith("KafkaConnectionError")
    assert "SaslAuthenticationFailed" in caplog.text


def test_an_unauthorised_write_is_reported_in_one_line(secure, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("text,label\nshares rally,Bullish\nprofits fall,Bearish\n")
    allowed = streamtune(
        secure.cli_env("producer"), "replay", str(rows), "--task", "tfns-sentiment"
    )
    assert allowed.returncode == 0, allowed.stderr
    denied = streamtune(secure.cli_env("serve"), "replay", str(rows), "--task", "tfns-sentiment")
    assert denied.returncode == 2, denied.stderr
    lines = [line for line in denied.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in denied.stderr, denied.stderr
    assert "not authorised" in lines[0] or "authoriz" in lines[0].lower(), lines[0]


async def _send_raw(settings: Settings, key: str, value: bytes) -> None:
    await send_raw(settings, MODEL_UPDATES, key.encode(), value)


async def _live_seen_by_a_new_follower(settings: Settings) -> tuple[str, int]:
    """What a consumer that starts now (a restarted trainer or replica) takes as live."""
    follower = UpdatesFollower(settings, [TASK])
    await follower.start()
    try:
        update = (await follower.catch_up())[TASK]
        assert update.manifest is not None
        return update.manifest.version, update.manifest.sequence
    finally:
        await follower.stop()


def test_a_replayed_manifest_is_rejected_and_a_signed_rollback_works(secure, tmp_path):
    keys = make_keys(tmp_path / "keys")
    trainer = secure.as_role("trainer", trusted_keys_dir=keys.trusted_dir)
    serve = secure.as_role(
        "serve", trusted_keys_dir=keys.trusted_dir, serve_tasks=TASK, serve_precision="fp32"
    )
    env = secure.cli_env("trainer")
    env["STREAMTUNE_SIGNING_KEY_FILE"] = str(keys.trusted_dir / "trainer.key")
    env["STREAMTUNE_TRUSTED_KEYS_DIR"] = str(keys.trusted_dir)

    async def go() -> None:
        await publish(trainer, keys.signer, "v1", trained_blob(1))
        await publish(trainer, keys.signer, "v2", trained_blob(2), parent="v1")
        published, live = await history(trainer, TASK)
        old_v1, old_v2 = published
        assert live is not None and live.version == "v2" and old_v2.sequence > old_v1.sequence
        async with running_server(serve) as server:
            assert server.stats.versions[TASK] == "v2"
            # The attack: v1's genuine signed bytes, re-sent as the live record.
            await _send_raw(trainer, TASK, old_v1.to_bytes())
            await wait_until(lambda: server.stats.rejected >= 1)
            assert server.stats.versions[TASK] == "v2"
            assert await _live_seen_by_a_new_follower(trainer) == ("v2", old_v2.sequence)
            # On purpose: the CLI signs v1 anew with a higher sequence; the fleet follows.
            done = await asyncio.to_thread(
                streamtune, env, "rollback", TASK, "--to", "v1", "--topic-prefix", "sec-"
            )
            assert done.returncode == 0, done.stderr
            await wait_until(lambda: server.stats.versions[TASK] == "v1")
            version, sequence = await _live_seen_by_a_new_follower(trainer)
            assert version == "v1" and sequence > old_v2.sequence
            # Replaying v2 now (a roll-forward nobody signed) is refused just the same.
            await _send_raw(trainer, TASK, old_v2.to_bytes())
            await wait_until(lambda: server.stats.rejected >= 2)
            assert server.stats.versions[TASK] == "v1"
        records = await read_topic(
            secure.as_role("monitor"), secure.base.topic(MODEL_EVENTS), timeout_s=30
        )
        events = [AdapterEvent.from_bytes(r.value) for r in records if r.key != b"probe"]
        stale = [e.version for e in events if e.kind == "rejected" and e.error == "stale"]
        assert stale == ["v1", "v2"], events

    asyncio.run(go())


async def _commit(settings: Settings, group: str, topic: str, offset: int) -> None:
    """Commit ``offset`` on partition 0 of ``topic`` (a full name) for ``group``."""
    from aiokafka import TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    consumer = make_consumer(settings, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


def test_the_monitor_reads_everything_it_shows_under_its_role(secure):
    """Issue 24, item 12: after `acls apply`, the monitor (and `streamtune status`) read every
    topic they fold and describe the groups whose lag they show, and may commit nothing."""
    from aiokafka.admin import NewTopic

    from streamtune.core.clients import make_admin
    from streamtune.monitor.feed import read_state, worker_group
    from streamtune.monitor.state import MONITORED
    from tests.examples import examples

    kinds = {
        "interactions": "Interaction", "predictions": "Prediction", "feedback": "Feedback",
        "labelled": "LabelledExample", "drift-events": "DriftEvent", "train-jobs": "TrainJob",
        "train-status": "JobStatus", "model-updates": "AdapterManifest",
        "model-events": "AdapterEvent", "alerts": "Alert", "dead-letter": "DeadLetter",
    }  # fmt: skip
    assert set(kinds) == set(MONITORED)
    example = examples()
    worker = secure.as_role("worker")
    internal = f"{worker_group(worker)}-acl-probe-changelog"  # as Faust names its tables' topics

    async def feed_every_topic() -> None:
        for topic, kind in kinds.items():
            writer = secure.as_role(WRITES[topic][0])
            producer = make_producer(writer)
            await producer.start()
            try:
                # The live record of a task of its own: no other test's adapters move.
                key = b"acl-probe-task" if topic == MODEL_UPDATES else b"acl-probe"
                value = example[kind].to_bytes()
                await producer.send_and_wait(writer.topic(topic), value, key=key, partition=0)
            finally:
                await producer.stop()
        admin = make_admin(worker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(internal, 1, 1)])
        finally:
            await admin.close()
        producer = make_producer(worker)
        await producer.start()
        try:
            await producer.send_and_wait(internal, b"{}", key=b"k", partition=0)
        finally:
            await producer.stop()
        # Committed groups, each behind by a record: what `status` shows as lag.
        serve = secure.as_role("serve")
        await _commit(serve, serve.serve_group_id, serve.topic("interactions"), 0)
        await _commit(worker, worker_group(worker), worker.topic("feedback"), 0)
        await _commit(worker, worker_group(worker), internal, 0)

    asyncio.run(feed_every_topic())
    monitor = secure.as_role("monitor")
    state = asyncio.run(read_state(monitor, with_lag=True))
    unread = [topic for topic in MONITORED if state.counts[topic] < 1]
    assert not unread, f"the monitor role read nothing from {unread}"
    assert state.lag.get(monitor.serve_group_id, 0) >= 1, state.lag
    assert state.lag.get(worker_group(monitor), 0) >= 2, state.lag  # feedback + its changelog

    # The command a person runs, under the monitor's credentials.
    status = streamtune(secure.cli_env("monitor"), "status")
    assert status.returncode == 0, status.stderr
    assert monitor.serve_group_id in status.stdout, status.stdout

    # Describing a group is not joining it: the monitor commits nowhere.
    with pytest.raises(KafkaError, match="Authorization"):
        asyncio.run(_commit(monitor, monitor.serve_group_id, monitor.topic("interactions"), 0))


# Two `doctor` runs (up to 300 s each), and the module's broker start (150 s) if it runs first.
@pytest.mark.timeout(900)
def test_doctor_checks_the_acls_of_the_role_it_logs_in_as(secure, tmp_path):
    """`streamtune doctor` under a SASL login: the serve role sees its topics; the same login
    taken for the trainer's (whose topics serve may not see) is told to apply the ACLs."""

    def doctor(**extra: str) -> tuple[int, dict[str, str]]:
        env = {**secure.cli_env("serve"), "STREAMTUNE_CACHE_DIR": str(tmp_path), **extra}
        proc = streamtune(env, "doctor", timeout_s=300)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode, {line[6:17].strip(): line for line in proc.stdout.splitlines()}

    _, lines = doctor()
    assert lines["broker"].startswith("ok"), lines
    assert lines["topics"].startswith("ok"), lines
    assert lines["acls"].startswith("ok") and "User:serve is the serve role" in lines["acls"]
    assert "not needed by role serve" in lines["signing key"], lines

    code, lines = doctor(
        STREAMTUNE_ACL_TRAINER_PRINCIPAL="User:serve", STREAMTUNE_ACL_SERVE_PRINCIPAL="User:x"
    )
    assert code == 2
    acls = lines["acls"]
    assert acls.startswith("FAIL") and "User:serve (trainer) cannot see" in acls, acls
    assert "sec-train-jobs" in acls and "`streamtune acls apply" in acls, acls
