"""``streamtune doctor``: what a setup needs, checked one line at a time, each problem with
the command that fixes it.

The checks run cheapest first and are yielded as they finish, so a person sees the first
lines at once: the tools (Python, Java, Maven), the cache, the signing keys, then the broker,
its topics and ACLs (each network step bounded by a few seconds), and last what needs torch
(the device and the measured precision, the bootstrap adapter and what is live).

Each :class:`Finding` is ``ok``, ``warn`` (works, but worth knowing), ``FAIL`` (fix it
first; its ``fix`` names the command) or ``skip`` (not checked, because a check it depends
on failed). A run with any ``FAIL`` exits 2.

What "this role" means: with a SASL login, the role whose principal
(``STREAMTUNE_ACL_<ROLE>_PRINCIPAL``) is ``User:<sasl_username>``; without one, a local
setup that runs every role (so it needs the trainer's key too).

>>> role_of(Settings())  # no login: a local setup, every role
>>> role_of(Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
...                  sasl_username="serve"))
'serve'
>>> topics_of("producer")
('interactions', 'feedback')
>>> print(Finding("FAIL", "broker", "no broker answers", "`make kafka-start`").line())
FAIL  broker      no broker answers; fix: `make kafka-start`
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas.topic_access import READS, ROLES, WRITES
from schemas.topics import MODEL_UPDATES
from streamtune.core.errors import StreamtuneError
from streamtune.core.logging_setup import quiet_aiokafka
from streamtune.core.settings import Settings

Status = Literal["ok", "warn", "FAIL", "skip"]

#: The task the demo and the README's first run use: checked when no task is named.
DEFAULT_TASK = "tfns-sentiment"
MIN_PYTHON = (3, 11)
MIN_JAVA = 17
#: Less free space than this under the cache is a warning (the broker and models write there).
MIN_FREE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Finding:
    status: Status
    check: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{self.status:<4}  {self.check:<11} {self.detail}"
        return f"{text}; fix: {self.fix}" if self.fix else text


def role_of(settings: Settings) -> str | None:
    """The role this process logs in as (SASL), ``"unknown"`` for a principal no role has,
    None without a login (a local setup: every role)."""
    if not settings.security_protocol.startswith("SASL"):
        return None
    principal = f"User:{settings.sasl_username}"
    for role in ROLES:
        if getattr(settings, f"acl_{role}_principal") == principal:
            return role
    return "unknown"


def topics_of(role: str) -> tuple[str, ...]:
    """The topics (base names) a role reads or writes, in the access table's order."""
    return tuple(t for t in WRITES if role in WRITES[t] or role in READS[t])


def _size(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed; unreadable parts skipped)."""
    total = 0
    for root, _dirs, files in os.walk(path, onerror=lambda _e: None):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _human(size: float) -> str:
    """A size for people.

    >>> _human(2_719_036), _human(512)
    ('2.6 MiB', '512 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _tool_output(cmd: list[str], timeout_s: float) -> str | None:
    """stdout and stderr of ``cmd`` (colour codes removed), or None when it cannot run."""
    try:
        proc = subprocess.run(  # noqa: S603
            cmd, capture_output=True, text=True, timeout=timeout_s, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version``'s output.

    >>> java_major('openjdk version "17.0.15" 2025-04-15')
    17
    >>> java_major('java version "1.8.0_392"')
    8
    >>> java_major("nothing") is None
    True
    """
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@dataclass
class Doctor:
    """Runs the checks for ``settings``; :meth:`run` yields one :class:`Finding` per line."""

    settings: Settings
    tasks: list[str] = field(default_factory=lambda: [DEFAULT_TASK])
    timeout_s: float = 5.0
    # What later checks need from earlier ones.
    _metadata: Any = None
    _topics_ok: bool = False
    _signer: Any = None
    _keyring: Any = None

    @property
    def role(self) -> str | None:
        return role_of(self.settings)

    def _needs(self, *roles: str) -> bool:
        """Whether this role (every role without a login) needs a thing ``roles`` need."""
        return self.role is None or self.role == "unknown" or self.role in roles

    @property
    def local_broker(self) -> bool:
        """Whether the broker is the local one ``streamtune kafka start`` runs."""
        s = self.settings
        local = ",".join(f"{s.kafka_host}:{s.kafka_port + i}" for i in range(s.kafka_nodes))
        return s.bootstrap_servers == local

    def _prefix_option(self) -> str:
        prefix = self.settings.topic_prefix
        return f" --topic-prefix {prefix}" if prefix else ""

    def run(self) -> Iterator[Finding]:
        yield self.python()
        yield self.java()
        yield self.maven()
        yield self.cache()
        yield self.signing_key()
        yield self.keyring()
        yield self.broker()
        yield self.topics()
        yield self.acls()
        yield from self.model()

    # --- tools -----------------------------------------------------------------------
    def python(self) -> Finding:
        v = sys.version_info
        found = f"{v.major}.{v.minor}.{v.micro} ({sys.executable})"
        if (v.major, v.minor) < MIN_PYTHON:
            return Finding(
                "FAIL", "python", f"{found}; streamtune needs 3.11 or newer",
                "install Python 3.11+ and recreate the virtual environment (`make venv`)",
            )  # fmt: skip
        return Finding("ok", "python", found)

    def java(self) -> Finding:
        from streamtune.core.local_kafka import _java

        why = "the local broker needs it" if self.local_broker else "only the local broker does"
        status: Status = "FAIL" if self.local_broker else "warn"
        fix = f"install a Java {MIN_JAVA}+ runtime (Debian: `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME"
        try:
            java = _java()
        except StreamtuneError:
            return Finding(status, "java", f"not found (JAVA_HOME, PATH); {why}", fix)
        output = _tool_output([java, "-version"], 10.0)
        major = java_major(output or "")
        if major is None:
            return Finding(status, "java", f"{java} -version did not answer; {why}", fix)
        if major < MIN_JAVA:
            return Finding(status, "java", f"Java {major} at {java}; Kafka needs {MIN_JAVA}+", fix)
        return Finding("ok", "java", f"Java {major} ({java})")

    def maven(self) -> Finding:
        from streamtune.core.local_kafka import LocalKafka

        libs = LocalKafka(self.settings).libs_dir
        resolved = (libs / ".complete").exists()
        mvn = shutil.which("mvn")
        version = _tool_output([mvn, "-B", "-v"], 15.0) if mvn else None
        match = re.search(r"Apache Maven (\S+)", version or "")
        jars = f"Kafka {self.settings.kafka_version} jars " + (
            f"resolved in {libs}" if resolved else "not resolved yet (the first start does it)"
        )
        if match is not None:
            return Finding("ok", "maven", f"Maven {match.group(1)}; {jars}")
        if resolved or not self.local_broker:
            return Finding("ok", "maven", f"not found, and not needed: {jars}")
        return Finding(
            "FAIL", "maven", f"not found; the local broker needs it once, to resolve the Kafka "
            f"{self.settings.kafka_version} jars into {libs}",
            "install Maven 3 (Debian: `apt-get install maven`), then `make kafka-start`",
        )  # fmt: skip

    def cache(self) -> Finding:
        path = self.settings.cache_dir
        if not path.exists():
            parent = next((p for p in path.parents if p.exists()), Path("/"))
            if not os.access(parent, os.W_OK):
                return Finding(
                    "FAIL", "cache", f"{path} does not exist and {parent} is not writable",
                    "set STREAMTUNE_CACHE_DIR to a writable folder",
                )  # fmt: skip
            return Finding("ok", "cache", f"{path} (empty: created on first use)")
        if not os.access(path, os.W_OK | os.X_OK):
            return Finding(
                "FAIL", "cache", f"{path} is not writable", "set STREAMTUNE_CACHE_DIR to a writable folder"
            )  # fmt: skip
        free = shutil.disk_usage(path).free
        detail = f"{path}: {_human(_size(path))}, {_human(free)} free"
        if free < MIN_FREE_BYTES:
            return Finding(
                "warn", "cache", f"{detail}; the broker and the models need more",
                "free space on that disk or set STREAMTUNE_CACHE_DIR elsewhere",
            )  # fmt: skip
        return Finding("ok", "cache", detail)

    # --- keys --------------------------------------------------------------------------
    def _key_path(self) -> Path:
        return self.settings.signing_key_file or self.settings.keys_dir / "trainer.key"

    def _trusted_dir(self) -> Path:
        return self.settings.trusted_keys_dir or self.settings.keys_dir / "trusted"

    def _generate_fix(self) -> str:
        path = self._key_path()
        where = "" if path == self.settings.keys_dir / "trainer.key" else (
            f" --dir {path.parent} --name {path.stem}"
        )  # fmt: skip
        return f"`streamtune keys generate --trust{where}`"

    def signing_key(self) -> Finding:
        from models.signing import load_signer

        s, path = self.settings, self._key_path()
        source = "STREAMTUNE_SIGNING_KEY" if s.signing_key is not None else str(path)
        if not self._needs("trainer"):
            if s.signing_key is not None or path.exists():
                return Finding(
                    "warn", "signing key", f"a private key ({source}) is here, though role "
                    f"{self.role} signs nothing", "keep it with the trainers only: remove it from here",
                )  # fmt: skip
            return Finding("ok", "signing key", f"not needed by role {self.role}")
        if s.signing_key is None and not path.exists():
            return Finding(
                "FAIL", "signing key", f"no trainer key at {path}: adapters cannot be signed",
                self._generate_fix(),
            )  # fmt: skip
        try:
            signer = load_signer(s)
        except (StreamtuneError, OSError) as exc:
            return Finding(
                "FAIL", "signing key", f"{source} cannot be read: {exc}",
                f"fix its permissions, or move it away and run {self._generate_fix()}",
            )  # fmt: skip
        self._signer = signer
        if s.signing_key is None and path.stat().st_mode & 0o077:
            return Finding(
                "warn", "signing key", f"trainer key {signer.key_id} at {path} is readable by "
                f"others (mode {path.stat().st_mode & 0o777:o})", f"`chmod 600 {path}`",
            )  # fmt: skip
        return Finding("ok", "signing key", f"trainer key {signer.key_id} ({source})")

    def keyring(self) -> Finding:
        from models.signing import load_keyring

        trusted = self._trusted_dir()
        if not self._needs("serve", "trainer", "worker", "monitor"):
            return Finding("ok", "keyring", f"not needed by role {self.role}")
        try:
            ring = load_keyring(self.settings)
        except StreamtuneError as exc:
            return Finding("FAIL", "keyring", str(exc), f"remove or replace that key in {trusted}")
        if not ring.keys:
            return Finding(
                "FAIL", "keyring", f"no trusted keys in {trusted} or STREAMTUNE_TRUSTED_KEYS: "
                "every adapter would be rejected",
                f"copy the trainer's public key into {trusted}"
                + ("" if self._signer else f", or {self._generate_fix()}"),
            )  # fmt: skip
        self._keyring = ring
        signer = self._signer
        if signer is not None and signer.key_id not in ring.keys:
            public = self._key_path().with_suffix(".pub")
            return Finding(
                "FAIL", "keyring", f"the trainer key {signer.key_id} is not trusted here: its "
                "adapters would be rejected",
                f"`mkdir -p {trusted} && cp {public} {trusted}/`" if public.exists()
                else f"add the trainer's public key to {trusted}",
            )  # fmt: skip
        ids = ", ".join(sorted(ring.keys))
        return Finding("ok", "keyring", f"{len(ring.keys)} trusted key(s) ({ids}) from {trusted}")

    # --- Kafka -------------------------------------------------------------------------
    def _broker_fix(self) -> str:
        if self.local_broker:
            return "`make kafka-start` (or `streamtune kafka start`)"
        return (
            f"start the broker at {self.settings.bootstrap_servers}, or point "
            "STREAMTUNE_BOOTSTRAP_SERVERS (--bootstrap-servers) at one that runs"
        )

    async def _fetch_metadata(self) -> Any:
        from aiokafka.client import AIOKafkaClient

        kwargs = {
            **self.settings.kafka_client_kwargs(),
            "request_timeout_ms": int(self.timeout_s * 1000),
        }
        client = AIOKafkaClient(**kwargs)
        try:
            await asyncio.wait_for(client.bootstrap(), self.timeout_s)
            return await asyncio.wait_for(client.fetch_all_metadata(), self.timeout_s)
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    def broker(self) -> Finding:
        from aiokafka import errors as kafka

        servers = self.settings.bootstrap_servers
        with quiet_aiokafka():  # our line says it once
            try:
                self._metadata = asyncio.run(self._fetch_metadata())
            except (kafka.KafkaConnectionError, kafka.NoBrokersAvailable, OSError) as exc:
                return Finding(
                    "FAIL", "broker", f"no Kafka broker answers at {servers} ({type(exc).__name__})",
                    self._broker_fix(),
                )  # fmt: skip
            except (TimeoutError, kafka.KafkaTimeoutError, kafka.RequestTimedOutError):
                return Finding(
                    "FAIL", "broker", f"the Kafka broker at {servers} did not answer within "
                    f"{self.timeout_s:.0f}s", self._broker_fix(),
                )  # fmt: skip
            except (
                kafka.SaslAuthenticationFailed,
                kafka.AuthenticationFailedError,
                kafka.UnsupportedSaslMechanismError,
                kafka.IllegalSaslStateError,
            ) as exc:
                return Finding(
                    "FAIL", "broker", f"the broker at {servers} refused the login "
                    f"User:{self.settings.sasl_username} ({type(exc).__name__})",
                    "check STREAMTUNE_SASL_USERNAME, STREAMTUNE_SASL_PASSWORD (or _FILE) and "
                    "STREAMTUNE_SASL_MECHANISM against the broker's users",
                )  # fmt: skip
            except (StreamtuneError, kafka.KafkaError) as exc:
                return Finding(
                    "FAIL", "broker", f"cannot talk to the broker at {servers}: {exc}",
                    "check the connection settings (STREAMTUNE_SECURITY_PROTOCOL, STREAMTUNE_SSL_*)",
                )  # fmt: skip
        count = len(self._metadata.brokers())
        return Finding(
            "ok", "broker", f"answers at {servers} ({count} broker{'s' if count > 1 else ''}, "
            f"{self.settings.security_protocol})",
        )  # fmt: skip

    def _needed_topics(self) -> list[str]:
        """Full names of the topics to check: all, or this role's under a SASL login."""
        role = self.role
        names = topics_of(role) if role not in (None, "unknown") else tuple(WRITES)
        return [self.settings.topic(name) for name in names]

    def topics(self) -> Finding:
        prefix = self.settings.topic_prefix
        under = f" under the prefix {prefix!r}" if prefix else ""
        if self._metadata is None:
            return Finding("skip", "topics", "not checked: no broker")
        needed = self._needed_topics()
        present = set(self._metadata.topics())
        missing = [name for name in needed if name not in present]
        if missing:
            hidden = " or not visible to this login" if self.role is not None else ""
            shown = ", ".join(missing[:4]) + (
                f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            )
            return Finding(
                "FAIL", "topics", f"{len(missing)} of {len(needed)} topics{under} missing{hidden}: {shown}",
                f"`streamtune topics create{self._prefix_option()}`",
            )  # fmt: skip
        specs = {spec.name: spec.partitions for spec in self.settings.topic_specs()}
        for name in needed:
            have = len(self._metadata.partitions_for_topic(name) or ())
            if have != specs[name]:
                return Finding(
                    "FAIL", "topics", f"{name} has {have} partitions, the definition says "
                    f"{specs[name]} (co-partitioned joins need them equal)",
                    f"delete and recreate it (`streamtune topics create{self._prefix_option()}`), "
                    "or set STREAMTUNE_STREAM_PARTITIONS",
                )  # fmt: skip
        self._topics_ok = True
        return Finding("ok", "topics", f"all {len(needed)} streamtune topics{under} exist")

    def acls(self) -> Finding:
        s, role = self.settings, self.role
        if role is None:
            why = (
                "the broker authorises nothing"
                if s.security_protocol == "PLAINTEXT"
                else "no SASL login, so no role to check"
            )
            return Finding(
                "ok", "acls", f"not in use (security_protocol {s.security_protocol}: {why})"
            )
        principal = f"User:{s.sasl_username}"
        if role == "unknown":
            return Finding(
                "warn", "acls", f"{principal} is none of the roles' principals, so what it needs is unknown",
                "set STREAMTUNE_ACL_<ROLE>_PRINCIPAL of its role to it",
            )  # fmt: skip
        if self._metadata is None:
            return Finding("skip", "acls", f"{principal} ({role}): not checked, no broker")
        hidden = [n for n in self._needed_topics() if n not in set(self._metadata.topics())]
        if hidden:
            return Finding(
                "FAIL", "acls", f"{principal} ({role}) cannot see {len(hidden)} of the topics it "
                f"needs: {', '.join(hidden[:4])}",
                f"`streamtune acls apply{self._prefix_option()}` as a super user (and "
                "`streamtune topics create` if they do not exist)",
            )  # fmt: skip
        return Finding(
            "ok", "acls", f"{principal} is the {role} role and may use all "
            f"{len(self._needed_topics())} topics it needs",
        )  # fmt: skip

    # --- torch: device, precision, the bootstrap adapter ---------------------------------
    def model(self) -> Iterator[Finding]:
        if not self._needs("serve", "trainer"):
            yield Finding(
                "ok", "model", f"role {self.role} runs no model: device and bootstrap not checked"
            )
            return
        import torch

        from models.device import _cpu_identity, precision_probe, resolve_device

        try:
            device = resolve_device(self.settings)
        except StreamtuneError as exc:
            yield Finding(
                "FAIL", "device", str(exc), "unset STREAMTUNE_DEVICE (auto) or set it to cpu"
            )
            return
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_identity()
        yield Finding(
            "ok", "device", f"{device.type} ({name}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__})",
        )  # fmt: skip
        yield self.precision(precision_probe(device, self.settings.cache_dir))
        yield from self.bootstrap()

    def precision(self, probe: Any) -> Finding:
        bf16 = f"{probe.bf16_ms:.2f} ms" if probe.bf16_ms is not None else "not timed (not native)"
        forced = self.settings.serve_precision
        detail = f"GEMM fp32 {probe.fp32_ms:.2f} ms, bf16 {bf16} -> {probe.choice}"
        if forced == "auto":
            return Finding("ok", "precision", f"{detail} (serve_precision auto)")
        if forced == "bf16" and probe.choice != "bf16":
            return Finding(
                "warn", "precision", f"{detail}, but STREAMTUNE_SERVE_PRECISION=bf16 serves the slower one",
                "unset STREAMTUNE_SERVE_PRECISION (auto)",
            )  # fmt: skip
        return Finding(
            "ok", "precision", f"{detail}; serving uses {forced} (STREAMTUNE_SERVE_PRECISION)"
        )

    def bootstrap(self) -> Iterator[Finding]:
        from models.base_encoder import load_encoder, locate_base_model
        from streamtune.train.bootstrap import locate

        try:
            encoder = load_encoder(locate_base_model(self.settings.base_model).path)
        except StreamtuneError as exc:
            yield Finding(
                "FAIL", "bootstrap", str(exc), "set STREAMTUNE_BASE_MODEL to an installed model"
            )
            return
        for task in self.tasks:
            version, path = locate(self.settings, task, encoder)
            if self._needs("trainer"):
                yield self._cached(task, version, path)
            yield self._live(task, version)

    def _cached(self, task: str, version: str, path: Path) -> Finding:
        from models.artifact import unpack
        from models.bootstrap import read_cached, shipped_version

        fix = f"`streamtune bootstrap {task}{self._prefix_option()}` (trains it once, then publishes it)"
        meta = path.with_suffix(".json")
        if not (path.exists() and meta.exists()) and shipped_version(task) == version:
            return Finding(
                "ok", "bootstrap", f"{task}: {version} ships with streamtune (sha256 verified; "
                "gated and cached on first use)",
            )  # fmt: skip
        if not (path.exists() and meta.exists()):
            others = [p for p in path.parent.glob(f"{task}-*.safetensors") if p != path]
            older = f"; {len(others)} built by another recipe" if others else ""
            return Finding(
                "FAIL", "bootstrap", f"{task}: no bootstrap adapter in {path.parent} for the "
                f"current recipe ({version}){older}", fix,
            )  # fmt: skip
        cached = read_cached(path)
        if cached is None:
            return Finding(
                "FAIL", "bootstrap", f"{task}: {path} does not match the sha256 recorded "
                f"beside it, or cannot be read (it will be built again)", fix,
            )  # fmt: skip
        blob, metrics = cached
        try:
            _, config = unpack(blob)
        except Exception as exc:  # a foreign file that its own record vouches for
            return Finding(
                "FAIL", "bootstrap", f"{task}: {path} is not a readable adapter ({exc})",
                f"`rm {path} {meta}`, then {fix}",
            )  # fmt: skip
        if config.task != task:
            return Finding(
                "FAIL", "bootstrap", f"{task}: {path} holds an adapter of {config.task}",
                f"`rm {path} {meta}`, then {fix}",
            )  # fmt: skip
        accuracy = metrics.get("gate_new_accuracy") if isinstance(metrics, dict) else None
        figure = f", anchor accuracy {accuracy:.1%}" if isinstance(accuracy, float) else ""
        return Finding("ok", "bootstrap", f"{task}: {version} cached ({_human(len(blob))}{figure})")

    def _live(self, task: str, version: str) -> Finding:
        topic = self.settings.topic(MODEL_UPDATES)
        if not self._topics_ok or self._keyring is None:
            why = "the keyring" if self._topics_ok else "the broker and its topics"
            return Finding("skip", "live", f"{task}: not checked until {why} pass")
        fix = f"`streamtune bootstrap {task}{self._prefix_option()}`"
        try:
            update, rejected = asyncio.run(self._live_update(task))
        except Exception as exc:  # any failure (a timeout too) is this line's
            return Finding(
                "FAIL", "live", f"{task}: could not read {topic} within {3 * self.timeout_s:.0f}s "
                f"({type(exc).__name__}: {exc})", "check the broker (`streamtune kafka status`)",
            )  # fmt: skip
        if update is None or update.manifest is None:
            if rejected:
                return Finding(
                    "FAIL", "live", f"{task}: {rejected} adapter records on {topic}, none signed "
                    "by a trusted key", f"trust the trainer's public key here, or {fix}",
                )  # fmt: skip
            return Finding(
                "FAIL", "live", f"{task}: no adapter is live on {topic} (the seed model answers)", fix
            )  # fmt: skip
        manifest = update.manifest
        if manifest.revert_to_base:
            return Finding(
                "warn", "live", f"{task}: rolled back to the seed model (signed revert {manifest.version})",
                f"`streamtune rollback {task} --to <version>` or {fix}",
            )  # fmt: skip
        if manifest.version == version:
            return Finding("ok", "live", f"{task}: {version} (the bootstrap) is live on {topic}")
        if manifest.version.startswith("bootstrap-"):
            return Finding(
                "warn", "live", f"{task}: {manifest.version}, a bootstrap by another recipe, is live "
                f"on {topic} (the current one is {version})", fix,
            )  # fmt: skip
        return Finding(
            "ok", "live", f"{task}: {manifest.version} is live on {topic} (promoted after the "
            f"bootstrap; parent {manifest.parent_version or '-'})",
        )  # fmt: skip

    async def _live_update(self, task: str) -> tuple[Any, int]:
        """The verified live update of ``task`` on model-updates, and how many records failed
        verification (an adapter signed by a key not trusted here)."""
        from streamtune.model_updates.follower import UpdatesFollower

        follower = UpdatesFollower(self.settings, [task], keyring=self._keyring)
        await asyncio.wait_for(follower.start(), self.timeout_s)
        try:
            latest = await asyncio.wait_for(follower.catch_up(), 2 * self.timeout_s)
        finally:
            await follower.stop()
        return latest.get(task), follower.rejected_records
