"""The client against a real 3-node cluster: CAS writes, typed errors, reads and writes across
a leader kill, a refused read, a watch that survives the loss of its node."""

import queue
import threading
import time
import uuid

import grpc
import pytest

import vault_client
from cluster import TestCluster
from vault_client import Change, Client


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(cluster):
    with Client(cluster.addrs, token=cluster.token) as c:
        yield c


def test_repr_never_shows_the_token(cluster):
    c = Client(cluster.addrs, token=cluster.token)
    assert cluster.token not in repr(c) and cluster.token not in str(c)
    assert "token=<set>" in repr(c)
    s = vault_client.Secret("a", 1, b"hunter2")
    assert "hunter2" not in repr(s)


def test_from_env_reads_addresses_and_a_token_file(cluster, client, tmp_path):
    name = unique("env")
    token_file = tmp_path / "token"
    token_file.write_text(cluster.token + "\n")
    env = {"VAULT_ADDR": ",".join("http://" + a for a in cluster.addrs), "VAULT_TOKEN_FILE": str(token_file)}
    c = Client.from_env(env)
    assert c.addrs == cluster.addrs
    assert c.put(name, "from-env") == 1
    assert client.get(name).text == "from-env"
    with pytest.raises(ValueError):
        Client.from_env({})


def test_put_get_and_check_and_set(client):
    name = unique("cas")
    assert client.put(name, b"one", cas=0) == 1
    assert client.put(name, "two", cas=1) == 2
    with pytest.raises(vault_client.CasMismatchError) as e:
        client.put(name, "stale", cas=1)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "current version is 2" in e.value.message
    with pytest.raises(vault_client.FailedPreconditionError):
        client.put(name, "exists", cas=0)
    got = client.get(name)
    assert (got.name, got.version, got.value) == (name, 2, b"two")
    assert client.get(name, version=1).value == b"one"
    with pytest.raises(vault_client.NotFoundError) as e:
        client.get(unique("missing"))
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    many = client.get_many([name, "missing/nothing"])
    assert many[name].value == b"two"
    assert isinstance(many["missing/nothing"], vault_client.NotFoundError)
    assert [s.name for s in client.list(name)] == [name]


def test_a_bad_token_is_unauthenticated(cluster):
    c = Client(cluster.addrs, token="not-a-token")
    with pytest.raises(vault_client.UnauthenticatedError) as e:
        c.put(unique("bad"), "x")
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_reads_and_writes_across_a_leader_kill(cluster, client):
    name = unique("ha")
    client.put(name, "before")
    leader = cluster.leader()
    # Reads start on the leader, writes know it: both must move on when it dies.
    order = [cluster.addrs[leader]] + [a for i, a in enumerate(cluster.addrs) if i != leader]
    c = Client(order, token=cluster.token, timeout=2.0, retry_for=30.0)
    assert c.get(name).text == "before"
    assert c.put(name, "v2") == 2
    cluster.kill(leader)
    try:
        assert c.get(name).text == "v2"
        assert c.put(name, "after") == 3
        assert c.get(name).text == "after"
        assert c.status().state in ("leader", "follower")
    finally:
        cluster.start(leader)
    # The restarted node serves the newest value too.
    only = Client([cluster.addrs[leader]], retry_for=30.0)
    assert only.get(name).text == "after"


def test_a_refused_read_raises_the_apis_status(client):
    name = unique("secret")
    client.put(name, "x")
    rule = f"loopback-{uuid.uuid4().hex[:6]}"
    loopback = ["127.0.0.1/32", "::1/128"]
    client.create_reader(rule, grants=["app/*"], cidrs=loopback)
    try:
        with pytest.raises(vault_client.PermissionDeniedError) as e:
            client.get(name)
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert e.value.message
    finally:
        # Once a rule exists, deleting the last one refuses every read: widen it instead.
        client.create_reader(rule, grants=["*"], cidrs=loopback, replace=True)
    assert client.get(name).text == "x"


def collect(watch, out: "queue.Queue"):
    try:
        for batch in watch:
            out.put(batch)
    except Exception as e:  # handed to the test
        out.put(e)


def wait_for_version(out: "queue.Queue", seen: list, batches: list, version: int, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not any(ev.version >= version for ev in seen):
        left = deadline - time.monotonic()
        assert left > 0, f"no event for version {version} within {timeout}s; seen {[e.version for e in seen]}"
        try:
            item = out.get(timeout=left)
        except queue.Empty:
            continue
        if isinstance(item, Exception):
            raise item
        batches.append(item)
        seen.extend(item.events)


def test_watch_survives_the_loss_of_its_node(cluster, client):
    name = unique("w")
    start = client.cluster_status().last_applied_index
    watcher = Client(cluster.addrs, retry_for=30.0)
    watch = watcher.watch(names=[name], after_revision=start)
    out: "queue.Queue" = queue.Queue()
    threading.Thread(target=collect, args=(watch, out), daemon=True).start()
    seen, batches = [], []
    for i in range(1, 6):
        client.put(name, f"v{i}")
    wait_for_version(out, seen, batches, 5)
    victim = cluster.addrs.index(watch.node)
    cluster.kill(victim)

    # The victim may be the leader `client` writes to: a put on the connection it had open is
    # lost mid-call (UNAVAILABLE or CANCELLED), and may or may not have applied. With
    # check-and-set the repeat is safe: a put that did apply makes it a mismatch at version i.
    def put(i: int) -> None:
        for attempt in range(1, 6):
            try:
                client.put(name, f"v{i}", cas=i - 1)
                return
            except vault_client.CasMismatchError:
                if client.get(name).version == i:
                    return
                raise
            except vault_client.VaultError as e:
                if attempt == 5 or e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise

    try:
        for i in range(6, 11):
            put(i)
        wait_for_version(out, seen, batches, 10)
    finally:
        watch.close()
        cluster.start(victim)
    assert watch.resumes >= 1, "the watch never moved off the killed node"
    assert watch.node != cluster.addrs[victim]
    # Every version once, in order: no gap, no repeat across the resume.
    assert [(ev.name, ev.version, ev.kind) for ev in seen] == [(name, v, Change.PUT) for v in range(1, 11)]
    revisions = [ev.revision for ev in seen]
    assert revisions == sorted(set(revisions)) and revisions[0] > start
    for b in batches:
        assert all(ev.revision <= b.revision for ev in b.events)


def test_watch_from_a_compacted_revision_is_a_typed_error():
    # One node that keeps 2 change events: after 20 writes, revision 1 is gone.
    small = TestCluster(nodes=1, env={"VAULT_WATCH_HISTORY": "2"})
    try:
        c = Client(small.addrs, token=small.token, retry_for=5.0)
        for i in range(20):
            c.put("compact/me", f"v{i}")
        watch = c.watch(prefixes=["compact/"], after_revision=1)
        with pytest.raises(vault_client.CompactedError) as e:
            next(iter(watch))
        assert e.value.code == grpc.StatusCode.OUT_OF_RANGE
        assert e.value.revision == 1 and "compacted" in e.value.message
        # The documented way on: watch from now (after reading again).
        live = c.watch(prefixes=["compact/"], progress=True)
        assert next(iter(live)).revision > 1
        live.close()
    finally:
        small.close()


def test_a_quiet_watch_keeps_its_connection_with_keepalive_pings():
    # The node closes a connection that sends nothing for 2 s; the client's pings keep the
    # watch's connection open through 5 quiet seconds, so it never has to resume.
    node = TestCluster(nodes=1, env={"VAULT_API_IDLE_SECS": "2"})
    try:
        watch = Client(node.addrs, keepalive=0.5).watch(names=["quiet/x"], progress=True)
        batches = iter(watch)
        assert not next(batches).events  # live
        time.sleep(5)
        Client(node.addrs, token=node.token).put("quiet/x", "v")
        got = next(b for b in batches if b.events)
        assert [(e.name, e.version) for e in got.events] == [("quiet/x", 1)]
        assert watch.resumes == 0, "the idle timeout closed the watch's connection"
        watch.close()
    finally:
        node.close()
