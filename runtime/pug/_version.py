"""The SDK's version: reported as `$sdkVersion` on every event and in the user agent."""

__version__ = "0.1.0"
