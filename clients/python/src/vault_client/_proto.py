"""The generated messages and stubs (`vault_client._gen`, made when the package is built)."""

try:
    from ._gen import vault_pb2 as pb  # noqa: F401
    from ._gen import vault_pb2_grpc as pb_grpc  # noqa: F401
except ImportError as e:  # a source tree on sys.path instead of an installed package
    raise ImportError(
        "vault_client's generated gRPC code is missing: install the package "
        "(pip install ./clients/python), which generates it from proto/vault/v1/vault.proto"
    ) from e
