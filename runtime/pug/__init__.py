"""Pug's Python server-side SDK.

The package is assembled from two folders: the hand-written runtime (this folder)
and the generated code (`generated/pug/`: `pug.proto` stubs, `pug.events` typed events).
A wheel merges them; in a source checkout or editable install `extend_path` joins them.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from pug._version import __version__
from pug.errors import PugError, PugValidationError
from pug.event import PugEvent

__all__ = ["PugError", "PugEvent", "PugValidationError", "__version__"]
