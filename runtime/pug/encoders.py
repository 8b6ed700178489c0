"""Deprecated: the support API of generated code is `pug._wire.codegen_support`.

Kept only for typed-event modules that users generated with `pug-codegen events` before
the move (they import `from pug import encoders`); it re-exports the same objects, so such
a module still registers its encoders in the one registry. Regenerate the module to drop
this import; the SDK's own code does not use it, and it will be removed in a later release.
"""

from pug._wire.codegen_support import (
    ENCODERS,
    EXACT_INT,
    UTC,
    bool_entries,
    double_prefix,
    integer,
    pack_double,
    register,
    string,
    timestamp,
)

__all__ = [
    "ENCODERS",
    "EXACT_INT",
    "UTC",
    "bool_entries",
    "double_prefix",
    "integer",
    "pack_double",
    "register",
    "string",
    "timestamp",
]
