"""examples/service.py picks up a rotation of app/db without a restart."""

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from vault_client import Client

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "service.py"


def lines_of(proc) -> "queue.Queue":
    q: "queue.Queue" = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def expect(q: "queue.Queue", wanted: str, timeout: float = 30.0, prefix: bool = False) -> list:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line == wanted or (prefix and line.startswith(wanted)):
            return seen
    raise AssertionError(f"the example never printed {wanted!r}; it printed {seen}")


def lines_for(q: "queue.Queue", seconds: float) -> list:
    """The lines printed within `seconds`."""
    seen, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
    return seen


def test_the_service_example_picks_up_a_rotation(cluster):
    admin = Client(cluster.addrs, token=cluster.token)
    first = admin.put("app/db", "initial-password")
    env = dict(os.environ, VAULT_ADDR=",".join(cluster.addrs))
    env.pop("VAULT_TOKEN", None)  # reads and watches need none
    proc = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        out = lines_of(proc)
        expect(out, f"using app/db version {first}")
        seen = expect(out, "watching app/db from revision", prefix=True)
        # Idle progress (every 5 s) reads nothing: no second "watching" (each came with a read).
        idle = lines_for(out, 7.0)
        assert not [line for line in idle if line.startswith("watching")], idle
        admin.set_rotation("app/db", 3600, "random:24")
        rotated = admin.rotate("app/db")
        assert rotated == first + 1
        seen = expect(out, f"using app/db version {rotated}")
        assert f"app/db changed (rotation, version {rotated})" in seen
        assert proc.poll() is None, "the service restarted or died"
        assert "initial-password" not in "\n".join(seen)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
