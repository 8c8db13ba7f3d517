"""Protobuf schemas of KV Connect (`datapath`) and the backup layout (`backup`).

The `*_pb2.py` modules are generated from the `.proto` files beside them with
`make proto` (grpcio-tools' bundled protoc); do not edit them by hand.
"""

from denokv.proto import backup_pb2, datapath_pb2

__all__ = ["backup_pb2", "datapath_pb2"]
