"""Protobuf on the wire: the stateless writer and reader (`protobuf`)."""
