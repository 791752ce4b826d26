"""A real vault cluster for the tests: `vault-testcluster` (tests/src/bin in the workspace),
whose path the Rust test that runs this suite puts in `VAULT_TESTCLUSTER`."""

from __future__ import annotations

import json
import os
import subprocess
from typing import List


class TestCluster:
    __test__ = False  # not a test class

    def __init__(self, nodes: int = 3, tls: bool = False, env: dict = None, reader_certs=()):
        binary = os.environ.get("VAULT_TESTCLUSTER")
        if not binary:
            raise RuntimeError("VAULT_TESTCLUSTER is not set: run through `make test` (tests/tests/clients_polyglot.rs)")
        args = [binary, "--nodes", str(nodes)] + (["--tls"] if tls else [])
        args += [f"--env={k}={v}" for k, v in (env or {}).items()]
        args += [f"--reader-cert={cn}" for cn in reader_certs]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self._reply()
        self.addrs: List[str] = hello["addrs"]
        self.token: str = hello["token"]
        self.ca_file = hello.get("ca_file")
        #: CN -> {"cert_file": ..., "key_file": ...}
        self.reader_certs = hello.get("reader_certs", {})

    def _reply(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"vault-testcluster exited ({self._proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def _command(self, cmd: str) -> dict:
        self._proc.stdin.write(cmd + "\n")
        self._proc.stdin.flush()
        return self._reply()

    def kill(self, i: int) -> None:
        self._command(f"kill {i}")

    def start(self, i: int) -> None:
        self._command(f"start {i}")

    def leader(self) -> int:
        return self._command("leader")["leader"]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            self._proc.wait(timeout=60)
