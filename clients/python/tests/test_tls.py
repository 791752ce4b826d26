"""TLS: a node serving the API over TLS, verified with the cluster CA."""

import pytest

import vault_client
from cluster import TestCluster
from vault_client import Client


@pytest.fixture(scope="module")
def tls_node():
    c = TestCluster(nodes=1, tls=True)
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
