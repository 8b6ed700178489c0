"""What an object holds in memory: the bytes of every object reachable from it (a cache's
or a store's real size, to check against the bound it claims)."""

from __future__ import annotations

import gc
import sys
import types


def deep_size(root: object) -> int:
    """Bytes of `root` and of every object reachable from it, each counted once; modules,
    classes and functions (shared code, not data) are not followed."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(
            obj, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                  types.MethodType)
        ):  # fmt: skip
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total
