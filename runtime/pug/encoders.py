"""Deprecated: the support API of generated code is `pug._wire.codegen_support`.

Kept only for typed-event modules that users generated with `pug-codegen events` before
the move (they import `from pug import encoders`); it re-exports the same objects, so such
a module still registers its encoders in the one registry. Regenerate the module to drop
this import; the SDK's own code does not use it, and it will be removed in a later release.
"""

from pug._wire.codegen_support import *  # noqa: F403
from pug._wire.codegen_support import __all__ as __all__
