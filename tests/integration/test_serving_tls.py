"""TLS: the serve config's ``ssl_keyfile``/``ssl_certfile`` reach Serve's proxy; the API answers
over HTTPS only. A minimal application (no fallback pool) built by the same ``app_builder`` that
``serve deploy`` uses."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import httpx
import pytest
import ray
from ray import serve

from raymlp.predictor.artifact import read_json
from raymlp.serving.examples import example_features, make_artifact
from tests._net import free_port


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture
def no_serve(ray_cluster):
    """This test starts Serve itself (HTTP options are fixed when Serve starts)."""
    try:
        ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
        serve.shutdown()
    except ValueError:
        pass


def test_https_when_tls_is_configured(no_serve, platform, tmp_path):
    key, cert = _self_signed(tmp_path)
    art = make_artifact(tmp_path / "m", seed=1)
    v = platform.registry.register("churn", art, signature=read_json(art, "signature"))
    platform.registry.set_alias("churn", "live", v)
    port = free_port()
    url = platform.serve.deploy(
        {
            "name": "tls",
            "http": {
                "host": "127.0.0.1",
                "port": port,
                "ssl_keyfile": str(key),
                "ssl_certfile": str(cert),
            },
            "models": [{"name": "churn", "alias": "live"}],
            "gateway": {"num_cpus": 0},
            "model_server": {"num_replicas": 1, "num_cpus": 0},
            "fallback_server": {"enabled": False},
        }
    )
    assert url == f"https://127.0.0.1:{port}"
    tls = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=url, verify=tls, timeout=30) as c:
        r = c.post("/v1/predictions", json={"model_id": "churn", "features": example_features(1)})
        assert r.status_code == 200, r.text
        assert (r.json()["route"], r.json()["model_version"]) == ("primary", str(v))
        assert c.get("/readyz").json()["models"] == {"churn": v}
    with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    status = platform.serve.status("tls")
    assert status["models"]["churn"]["stable_version"] == v
    assert "FallbackServer" not in status["deployments"]


def test_tls_is_refused_on_a_cluster_recorded_as_haproxy(ray_cluster):
    """`raymlp up` records the ingress it started in the cluster's KV; a deploy from another
    process (whose own environment says nothing) reads it there and refuses TLS on HAProxy."""
    from ray.experimental import internal_kv

    from raymlp._private.serve_ingress import INGRESS_KV_KEY
    from raymlp.config import HTTPConfig
    from raymlp.errors import ConfigError
    from raymlp.serving.deploy import check_ingress_supports

    ns = "tls-ingress-test"
    tls = HTTPConfig(ssl_keyfile="k.pem", ssl_certfile="c.pem")
    check_ingress_supports(tls, ns)  # nothing recorded: this process's (proxy) environment
    internal_kv._internal_kv_put(INGRESS_KV_KEY, b"haproxy", overwrite=True, namespace=ns)
    try:
        with pytest.raises(ConfigError) as e:
            check_ingress_supports(tls, ns)
        assert e.value.context["field"] == "http.ssl_keyfile"
        check_ingress_supports(HTTPConfig(), ns)  # plain HTTP is fine on HAProxy
    finally:
        internal_kv._internal_kv_del(INGRESS_KV_KEY, namespace=ns)
