"""Compile catalog/proto into betterproto2 stubs (messages, grpclib clients and servers)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2


def _scripts_dir() -> str:
    return sysconfig.get_path("scripts")


def proto_files(proto_root: Path) -> list[Path]:
    """The .proto files under `proto_root`, relative to it, sorted."""
    return sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))


def compile_protos(proto_root: Path, header: list[str]) -> dict[str, str]:
    """betterproto2 stubs for every file under `proto_root`: relative path → text.

    protoc is grpcio-tools' (so its bundled well-known types are used); the plugin and
    `ruff` (which the plugin formats with) come from this interpreter's scripts folder.
    """
    scripts = _scripts_dir()
    plugin = Path(scripts) / "protoc-gen-python_betterproto2"
    if not plugin.exists():
        raise RuntimeError(
            "betterproto2's protoc plugin is not installed; install the `codegen` extra"
        )
    env = dict(os.environ, PATH=scripts + os.pathsep + os.environ.get("PATH", ""))
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            f"--plugin=protoc-gen-python_betterproto2={plugin}",
            f"--python_betterproto2_out={out}",
            "--python_betterproto2_opt=client_generation=async,server_generation=async",
            *[str(p) for p in proto_files(proto_root)],
        ]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=proto_root)
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed:\n{result.stderr}")
        files: dict[str, str] = {}
        for path in sorted(Path(out).rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(out).as_posix()
            text = path.read_text(encoding="utf-8")
            if rel.endswith(".py"):
                text = "".join(f"# {line}\n" for line in header) + text
            files[rel] = text
        return files


def descriptor_set(proto_root: Path) -> descriptor_pb2.FileDescriptorSet:
    """Every file under `proto_root` (and its imports) compiled by protoc."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        result = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--include_imports",
             f"--descriptor_set_out={out}", *[str(p) for p in proto_files(proto_root)]],
            cwd=proto_root, capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed:\n{result.stderr}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
