"""Which failures move a call to another node, against the statuses the server sends (quoted
from vault-node/src/error.rs, vault-raft/src/cluster.rs, vault-node/src/api/secrets.rs and
vault-core/src/error.rs), and a real unreachable node."""

import socket
import uuid

import grpc
import pytest

from vault_client import Client, errors

NOT_LEADER = "no leader could take this request"
# Refusals after which the write may have run: it must not be sent again.
AMBIGUOUS = [
    "leader 2 was replaced before it answered; the write may or may not have been applied",
    "rotation of app/db failed: exec:/h exited with status 3; the old version stays current and the leader retries",
    "key management service unavailable: connection reset",
]


class Refusal(grpc.RpcError):
    """A failed call as grpc raises it: code, details, trailers."""

    def __init__(self, code, details, trailers=()):
        self._code, self._details, self._trailers = code, details, tuple(trailers)

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers


class Nodes:
    """Stand-in stubs: `answers[addr]` is raised (an exception) or returned; calls are logged."""

    def __init__(self, client, answers):
        self.answers, self.calls = answers, []
        client._stub = self.stub

    def stub(self, addr, service):
        nodes = self

        class Stub:
            def __getattr__(self, method):
                def call(req, timeout=None, metadata=()):
                    nodes.calls.append(addr)
                    answer = nodes.answers.get(addr, "ok")
                    if isinstance(answer, Exception):
                        raise answer
                    return answer

                return call

        return Stub()


def unavailable(message, leader=None):
    trailers = [("x-vault-leader", leader)] if leader else []
    return Refusal(grpc.StatusCode.UNAVAILABLE, message, trailers)


ADDRS = ["n1:8200", "n2:8200", "n3:8200"]


@pytest.mark.parametrize("message", AMBIGUOUS)
def test_a_write_that_may_have_run_is_not_sent_again(message):
    c = Client(ADDRS, retry_for=0.5)
    nodes = Nodes(c, {"n1:8200": unavailable(message)})
    with pytest.raises(errors.UnavailableError) as e:
        c.delete("app/db")
    assert e.value.message == message
    assert nodes.calls == ["n1:8200"], "sent once"


def test_a_write_a_follower_refused_goes_to_the_leader_it_names():
    c = Client(ADDRS, retry_for=0.5)
    nodes = Nodes(c, {"n1:8200": unavailable(f"{NOT_LEADER} (leader: n3:8200)", leader="n3:8200")})
    c.delete("app/db")
    assert nodes.calls == ["n1:8200", "n3:8200"]
    # Remembered: the next write starts there.
    nodes.calls.clear()
    c.delete("app/db")
    assert nodes.calls == ["n3:8200"]


def test_a_write_refused_with_no_leader_known_goes_to_the_next_node():
    c = Client(ADDRS, retry_for=0.5)
    nodes = Nodes(c, {"n1:8200": unavailable(f"{NOT_LEADER} (no leader known)")})
    c.delete("app/db")
    assert nodes.calls == ["n1:8200", "n2:8200"]


def test_an_unconfigured_hinted_leader_serves_that_write_only():
    c = Client(ADDRS, retry_for=0.5)
    nodes = Nodes(c, {"n1:8200": unavailable(f"{NOT_LEADER} (leader: other:8200)", leader="http://other:8200")})
    c.delete("app/db")
    assert nodes.calls == ["n1:8200", "other:8200"]
    nodes.calls.clear()
    c.delete("app/db")
    assert nodes.calls[0] == "n1:8200", "not remembered as leader"


def test_a_read_never_follows_a_hint():
    c = Client(ADDRS, retry_for=0.5)
    nodes = Nodes(c, {"n1:8200": unavailable(f"{NOT_LEADER} (leader: evil:80)", leader="evil:80")})
    assert c.status() == "ok"
    assert nodes.calls == ["n1:8200", "n2:8200"], "the next configured node, not the hint"
    nodes.calls.clear()
    c.delete("app/db")
    assert nodes.calls[0] == "n1:8200", "a read's hint does not make a leader"


def test_a_write_moves_on_from_a_node_that_cannot_be_reached(cluster):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    with Client([dead] + cluster.addrs, token=cluster.token) as c:
        name = f"retry/{uuid.uuid4().hex[:8]}"
        assert c.put(name, "v", cas=0) == 1
        assert c.get(name).value == b"v"
