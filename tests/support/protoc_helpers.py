"""Compile catalog/proto with protoc and load the result with Google's protobuf runtime.

The tests use Google's implementation as an independent reference next to the
betterproto2 stubs: the descriptors come straight from protoc, and the message
classes are built from those descriptors in a private pool, so nothing is
generated into (or imported from) a package called `sdk`, `shared` or `common`
that could clash with other installed distributions.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory
from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "catalog" / "proto"


def proto_files(root: Path = PROTO_ROOT) -> list[str]:
    """Every .proto under `root`, as import paths relative to it (`sdk/events/v1/events.proto`)."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*.proto"))


def grpc_tools_include_dir() -> Path:
    """grpc_tools ships google/protobuf/*.proto, which our files import (timestamp, struct...)."""
    return Path(str(resources.files("grpc_tools") / "_proto"))


def compile_descriptor_set(
    out_file: Path, root: Path = PROTO_ROOT
) -> descriptor_pb2.FileDescriptorSet:
    """Run protoc on every .proto under `root` and return the self-contained descriptor set."""
    args = [
        "protoc",  # argv[0], ignored by protoc
        f"-I{root}",
        f"-I{grpc_tools_include_dir()}",
        "--include_imports",
        f"--descriptor_set_out={out_file}",
        *proto_files(root),
    ]
    exit_code = protoc.main(args)
    if exit_code != 0:
        raise RuntimeError(f"protoc failed with exit code {exit_code}: {' '.join(args)}")
    return descriptor_pb2.FileDescriptorSet.FromString(out_file.read_bytes())


def build_pool(descriptor_set: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    """A fresh pool holding every file of the set, each added after its dependencies.

    protoc already writes --include_imports output in dependency order; adding the
    dependencies first ourselves keeps this correct for any hand-made set as well.
    """
    by_name = {file.name: file for file in descriptor_set.file}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        added.add(name)
        file = by_name[name]
        for dependency in file.dependency:
            add(dependency)
        pool.Add(file)

    for name in by_name:
        add(name)
    return pool


class GoogleMessages:
    """Google protobuf message classes by full name: `classes["sdk.events.v1.Event"]`."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self.pool = pool

    def __getitem__(self, full_name: str) -> type[message.Message]:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
