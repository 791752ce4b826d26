"""TLS: a node serving the API over TLS, verified with the cluster CA, which also verifies
client certificates (reader rules by CN)."""

import pytest

import vault_client
from cluster import TestCluster
from vault_client import Client


@pytest.fixture(scope="module")
def tls_node():
    c = TestCluster(nodes=1, tls=True, reader_certs=["app-reader"])
    yield c
    c.close()


def test_tls_with_the_ca(tls_node):
    c = Client(tls_node.addrs, token=tls_node.token, ca_file=tls_node.ca_file)
    assert c.put("tls/one", "over tls") >= 1
    assert c.get("tls/one").text == "over tls"


def test_tls_without_the_ca_is_refused(tls_node):
    # Plaintext against a TLS listener: no node answers.
    c = Client(tls_node.addrs, token=tls_node.token, timeout=1.0, retry_for=1.0)
    with pytest.raises(vault_client.UnavailableError):
        c.get("tls/one")


def test_a_client_certificate_reads_what_its_rule_grants(tls_node):
    # Last in this module: once a reader rule exists, other reads need one too.
    admin = Client(tls_node.addrs, token=tls_node.token, ca_file=tls_node.ca_file)
    admin.put("mtls/db", "by certificate")
    admin.create_reader("app-reader", grants=["mtls/*"], cert_cns=["app-reader"])
    cert = tls_node.reader_certs["app-reader"]
    reader = Client(tls_node.addrs, ca_file=tls_node.ca_file, cert_file=cert["cert_file"], key_file=cert["key_file"])
    assert reader.get("mtls/db").text == "by certificate"
    with pytest.raises(vault_client.PermissionDeniedError):
        reader.get("tls/one")  # not granted to its rule
    anonymous = Client(tls_node.addrs, ca_file=tls_node.ca_file)
    with pytest.raises(vault_client.PermissionDeniedError) as e:
        anonymous.get("mtls/db")  # no rule names 127.0.0.1
    assert e.value.code.name == "PERMISSION_DENIED"
    with pytest.raises(ValueError):
        Client(tls_node.addrs, ca_file=tls_node.ca_file, cert_file=cert["cert_file"])
