"""The floor for serializing one event: Google's protobuf (upb) on the repo's own protos.

Compiles catalog/proto with grpcio-tools at run time (the same steps as
tests/support/protoc_helpers.py, copied here so the benchmarks do not import the tests) and builds
`sdk.events.v1.Event` from a private DescriptorPool. Used by bench_compare.py:

    from upb_floor import event_message
    msg = event_message(PROPS)
    msg.SerializeToString()
"""

from __future__ import annotations

import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parents[1] / "catalog" / "proto"


def compile_descriptor_set(root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorSet:
    """Run protoc on every .proto under `root`; the self-contained descriptor set."""
    out_file = Path(tempfile.mkdtemp()) / "protos.pb"
    include = Path(str(resources.files("grpc_tools") / "_proto"))
    files = sorted(path.relative_to(root).as_posix() for path in root.rglob("*.proto"))
    args = ["protoc", f"-I{root}", f"-I{include}", "--include_imports"]
    if protoc.main([*args, f"--descriptor_set_out={out_file}", *files]) != 0:
        raise RuntimeError("protoc failed on " + str(root))
    return descriptor_pb2.FileDescriptorSet.FromString(out_file.read_bytes())


def build_pool(descriptor_set: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    """A fresh pool with every file of the set, each added after its dependencies."""
    by_name = {file.name: file for file in descriptor_set.file}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        added.add(name)
        for dependency in by_name[name].dependency:
            add(dependency)
        pool.Add(by_name[name])

    for name in by_name:
        add(name)
    return pool


def message_class(pool: descriptor_pool.DescriptorPool, full_name: str) -> type[message.Message]:
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def set_value(value_msg: Any, value: object) -> None:
    """Fill a common.v1.PropertyValue from a Python scalar."""
    if isinstance(value, bool):
        value_msg.bool_value = value
    elif isinstance(value, int):
        value_msg.int_value = value
    elif isinstance(value, float):
        value_msg.double_value = value
    else:
        value_msg.string_value = str(value)


def event_class() -> type[message.Message]:
    """Google's protobuf class of sdk.events.v1.Event, compiled from catalog/proto."""
    return message_class(build_pool(compile_descriptor_set()), "sdk.events.v1.Event")


def event_message(props: dict[str, object], cls: Any = None) -> message.Message:
    """An sdk.events.v1.Event with `props` as custom PropertyValues, ready to serialize."""
    msg: Any = (cls or event_class())(
        event_id="018bcfe5-6800-79ce-9cdc-25c39e3b8568",
        distinct_id="user_42",
        kind="order.completed",
        session_id="018bcfe5-6800-79ce-9cdc-25c39e3b8569",
    )
    msg.occur_time.FromMilliseconds(int(time.time() * 1000))
    for key, value in AUTO.items():
        msg.auto_properties[key].string_value = value
    for key, value in props.items():
        set_value(msg.custom_properties[key], value)
    return msg


AUTO = {"$lib": "pug-python", "$sdkVersion": "0.1.0", "$platform": "server"}
