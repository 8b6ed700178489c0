"""Pug's Python server-side SDK.

The package is assembled from two folders: the hand-written runtime (this folder)
and the generated code (`generated/pug/`: protobuf stubs, typed events). A wheel
merges them; in a source checkout or editable install `extend_path` joins them.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from pug._version import __version__

__all__ = ["__version__"]
