"""Generated protobuf and gRPC code for edgebed.v1 (see scripts/gen-protos)."""
