"""Generates the gRPC code from the vault's proto while the package is built.

The proto is read from the checkout (`../../proto/vault/v1/vault.proto`, or the file named by
`VAULT_PROTO`); `grpc_tools.protoc` writes `vault_pb2.py` / `vault_pb2_grpc.py` into the
build directory only, as `vault_client._gen`, with `PROTO_SHA256` recording the proto they
came from (the tests compare it with the proto in the tree to catch stale code).
"""

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def proto_path() -> Path:
    path = Path(os.environ.get("VAULT_PROTO") or HERE.parent.parent / "proto" / "vault" / "v1" / "vault.proto")
    if not path.is_file():
        raise SystemExit(f"vault-client: {path} not found: build from a checkout of the vault (or set VAULT_PROTO)")
    return path


def generate(out: Path) -> None:
    from grpc_tools import protoc  # a build requirement

    proto = proto_path()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(proto, Path(tmp) / "vault.proto")
        args = ["protoc", f"-I{tmp}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
                str(Path(tmp) / "vault.proto")]
        if protoc.main(args) != 0:
            raise SystemExit(f"vault-client: protoc failed on {proto}")
    # grpc_python_out imports the messages as a top-level module; make it package-relative.
    grpc_file = out / "vault_pb2_grpc.py"
    text = re.sub(r"^import vault_pb2 as", "from . import vault_pb2 as", grpc_file.read_text(), flags=re.M)
    grpc_file.write_text(text)
    (out / "__init__.py").write_text('"""Generated from proto/vault/v1/vault.proto at build time."""\n')
    (out / "PROTO_SHA256").write_text(hashlib.sha256(proto.read_bytes()).hexdigest() + "\n")


class BuildWithProto(build_py):
    def run(self):
        super().run()
        generate(Path(self.build_lib) / "vault_client" / "_gen")


def runtime_requirements() -> list:
    """grpcio, and the protobuf runtime that the generator's code needs: grpcio-tools names
    the protobuf its bundled protoc matches (the runtime must not be older)."""
    from importlib import metadata

    try:
        wanted = [r.split(";")[0] for r in metadata.requires("grpcio-tools") or [] if r.startswith("protobuf")]
    except metadata.PackageNotFoundError:  # metadata asked for without the build requirements
        wanted = []
    return ["grpcio>=1.66,<2"] + (wanted or ["protobuf>=5.27"])

setup(
    cmdclass={"build_py": BuildWithProto},
    package_data={"vault_client": ["py.typed"]},
    install_requires=runtime_requirements(),
)
