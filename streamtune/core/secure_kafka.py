"""A local KRaft node with a SASL_SSL client listener, SCRAM-SHA-512 users and the
StandardAuthorizer: the broker the security tests (and a hardened dev setup) run against.

It is :class:`LocalKafka` with other properties: clients connect over TLS on ``kafka_port``
and log in with SCRAM-SHA-512; nothing is allowed without an ACL
(``allow.everyone.if.no.acl.found=false``), except to ``super_user``. The SCRAM users are
created when the storage is formatted, so they exist before the first client connects.

The controller listener stays PLAINTEXT on the loopback host, as the combined node talks to
itself there (its principal, ``User:ANONYMOUS``, is a super user so the node can register);
keep ``kafka_host`` on loopback when you use this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from streamtune.core.errors import BrokerError
from streamtune.core.local_kafka import BrokerStatus, LocalKafka, _java, _pid_alive
from streamtune.core.logging_setup import quiet_aiokafka
from streamtune.core.settings import Settings

SCRAM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class BrokerSecurity:
    """What the secure node needs: its TLS identity, the CA, and the SCRAM users."""

    keystore_pem: Path  # the broker's private key (PKCS8, unencrypted) and certificate chain
    truststore_pem: Path  # the CA certificate that signed it
    users: dict[str, str]  # SCRAM-SHA-512 user -> password; must include super_user
    super_user: str = "admin"

    def __post_init__(self) -> None:
        if self.super_user not in self.users:
            raise BrokerError(f"the super user {self.super_user!r} needs a SCRAM password")
        for name, password in self.users.items():
            if not name.isidentifier() or any(c in password for c in ',="\\]'):
                raise BrokerError(f"SCRAM user {name!r}: use plain names and passwords")

    def client_settings(self, settings: Settings, user: str, **overrides: object) -> Settings:
        """Settings for a client that logs in as ``user`` over TLS to this node."""
        values = settings.model_dump(exclude={"sasl_password", "sasl_password_file"})
        values.update(
            bootstrap_servers=f"{settings.kafka_host}:{settings.kafka_port}",
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM,
            sasl_username=user,
            sasl_password=self.users[user],
            ssl_cafile=self.truststore_pem,
        )
        values.update(overrides)
        return Settings(**values)


class SecureLocalKafka(LocalKafka):
    """``LocalKafka`` with SASL_SSL, SCRAM users and ACL enforcement."""

    def __init__(self, settings: Settings, security: BrokerSecurity) -> None:
        super().__init__(settings)
        self.security = security
        self.admin_settings = security.client_settings(settings, security.super_user)

    def _write_properties(self) -> Path:
        path = super()._write_properties()
        s, sec = self.settings, self.security
        props = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        admin_password = sec.users[sec.super_user]
        props.update(
            {
                "listeners": f"SASL_SSL://{s.kafka_host}:{s.kafka_port},CONTROLLER://{s.kafka_host}:{s.kafka_controller_port}",
                "advertised.listeners": f"SASL_SSL://{s.kafka_host}:{s.kafka_port}",
                "inter.broker.listener.name": "SASL_SSL",
                "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
                "sasl.enabled.mechanisms": SCRAM,
                "sasl.mechanism.inter.broker.protocol": SCRAM,
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{sec.super_user}" password="{admin_password}";'
                ),
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(sec.keystore_pem),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(sec.truststore_pem),
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found": "false",
                "super.users": f"User:{sec.super_user};User:ANONYMOUS",
            }
        )
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        path.chmod(0o600)  # it holds the inter-broker password
        return path

    def _format_storage(self, libs: Path, props: Path) -> None:
        if (self.storage_dir / "meta.properties").exists():
            return
        cmd = [
            _java(), "-Xmx256m", "-cp", f"{libs}/*",
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            f"--cluster-id={_cluster_id()}", "-c", str(props),  # an id may start with "-"
        ]  # fmt: skip
        for user, password in self.security.users.items():
            cmd += ["--add-scram", f"{SCRAM}=[name={user},password={password}]"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def _wait_answering(self, pid: int, timeout: float, began: float) -> None:
        while time.monotonic() - began < timeout:
            if not _pid_alive(pid):
                raise BrokerError(
                    f"the broker (pid {pid}) exited during start-up:\n{self.log_tail()}"
                )
            if asyncio.run(self._answers(5.0)):
                return
            time.sleep(0.5)
        raise BrokerError(f"the broker did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def status(self) -> BrokerStatus:
        pid = self._live_pid()
        return BrokerStatus(
            running=pid is not None,
            answering=pid is not None and asyncio.run(self._answers(5.0)),
            pid=pid,
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
            version=self.settings.kafka_version,
        )

    async def _answers(self, timeout_s: float) -> bool:
        """True when the node answers the super user's metadata request over SASL_SSL."""
        from streamtune.core.clients import make_admin

        admin = make_admin(self.admin_settings)
        with quiet_aiokafka():  # refusals are the expected answer while starting
            try:
                await asyncio.wait_for(admin.start(), timeout_s)
                answer = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
                return bool(answer["brokers"])
            except Exception:  # any failure means "not yet"
                return False
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()


def _cluster_id() -> str:
    import base64
    import uuid

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


__all__ = ["BrokerSecurity", "SecureLocalKafka"]
