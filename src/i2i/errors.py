"""Errors caused by the user's input or environment, shared by every layer.

Each carries ONE line that names the config key or file and the fix; the CLI prints it as
``i2i: error: <message>`` and exits with status 2 (``I2I_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


class RunDirError(RuntimeError):
    """The run directory cannot be written (permissions, full disk, in use); the message names the path and the fix."""
