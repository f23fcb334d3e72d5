"""Security pieces without a broker: masked secrets, TLS settings, signed sequences."""

from __future__ import annotations

import base64

import pytest

from models.errors import AdapterRejected
from models.signing import Keyring, Signer, generate_keypair
from schemas import AdapterManifest
from streamtune.core.settings import Settings

pytestmark = pytest.mark.security


def _manifest(**fields) -> AdapterManifest:
    blob = b"adapter"
    values = dict(
        task="tfns-sentiment", version="v1", base_model_id="m", num_labels=3,
        sha256="0" * 64, size_bytes=len(blob), created_ts_ms=1_700_000_000_000, key_id="-", signature_b64="-",
        transfer="inline", payload_b64=base64.b64encode(blob).decode(),
    )  # fmt: skip
    values.update(fields)
    return AdapterManifest(**values)


@pytest.fixture
def signer_and_ring(tmp_path):
    private, _ = generate_keypair(tmp_path / "trainer")
    return Signer.from_pem(private.read_bytes()), Keyring.from_dir(tmp_path)


def test_secrets_are_masked_and_read_from_a_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret-pw\n")
    s = Settings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="serve", sasl_password_file=secret, ssl_key_password="k3y-pw",
    )  # fmt: skip
    assert "s3cret" not in repr(s) and "k3y-pw" not in repr(s) and "k3y-pw" not in str(s)
    assert s.password() == "s3cret-pw"
    kwargs = s.kafka_client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512" and kwargs["sasl_plain_username"] == "serve"


def test_incomplete_security_settings_fail_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="SASL_USERNAME"):
        Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512")
    with pytest.raises(ValueError, match="SASL_MECHANISM"):
        Settings(security_protocol="SASL_SSL", sasl_username="u")
    with pytest.raises(ValueError, match="not a readable file"):
        Settings(security_protocol="SSL", ssl_cafile=tmp_path / "missing.pem").kafka_client_kwargs()


def test_old_manifests_without_sequence_still_verify(signer_and_ring):
    signer, ring = signer_and_ring
    legacy = signer.sign(_manifest())  # sequence 0: signed over the fields it had before
    payload = legacy.model_dump(mode="json", exclude={"sequence"})
    assert AdapterManifest.model_validate(payload).sequence == 0
    ring.verify(AdapterManifest.model_validate(payload))


def test_the_signature_covers_the_sequence(signer_and_ring):
    signer, ring = signer_and_ring
    signed = signer.sign(_manifest(sequence=5))
    ring.verify(signed)
    with pytest.raises(AdapterRejected) as caught:
        ring.verify(signed.model_copy(update={"sequence": 99}))  # a replay dressed up as new
    assert caught.value.kind == "bad_signature"
    with pytest.raises(AdapterRejected):
        ring.verify(signed.model_copy(update={"sequence": 0}))


def test_the_faust_worker_gets_the_same_sasl_ssl_credentials(tmp_path):
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.app import _credentials

    ca = tmp_path / "ca.pem"
    ca.write_text(_ca_pem())
    s = Settings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="worker",
        sasl_password="pw", ssl_cafile=ca,
    )  # fmt: skip
    auth = credentials_to_aiokafka_auth(_credentials(s))
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "worker" and auth["ssl_context"].check_hostname


def _ca_pem() -> str:
    import tempfile
    from pathlib import Path

    from tests.security_helpers import make_pki

    _, ca = make_pki(Path(tempfile.mkdtemp()))
    return ca.read_text()
