"""The generated code is the proto's: the build recorded the proto's SHA-256, which must be
the one of the proto in this checkout (else reinstall: `make clients`)."""

import hashlib
from importlib import resources
from pathlib import Path

PROTO = Path(__file__).resolve().parents[3] / "proto" / "vault" / "v1" / "vault.proto"


def test_generated_code_is_from_the_proto_in_the_tree():
    recorded = resources.files("vault_client._gen").joinpath("PROTO_SHA256").read_text().strip()
    current = hashlib.sha256(PROTO.read_bytes()).hexdigest()
    assert recorded == current, (
        f"vault_client was generated from another {PROTO.name} (sha256 {recorded[:12]}, the tree has "
        f"{current[:12]}): reinstall it (make clients)"
    )


def test_generated_stubs_cover_every_rpc_of_the_proto():
    from vault_client._proto import pb

    text = PROTO.read_text()
    for service in ("Secrets", "Admin"):
        block = text.split(f"service {service} {{", 1)[1].split("\n}", 1)[0]
        rpcs = {line.split()[1].split("(")[0] for line in block.splitlines() if line.strip().startswith("rpc ")}
        generated = {m.name for m in pb.DESCRIPTOR.services_by_name[service].methods}
        assert rpcs == generated
