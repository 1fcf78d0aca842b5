"""User-facing errors.

Every error a user can trigger by bad input is a :class:`VaezooError` whose message is one line
that names the problem. The CLI prints it as ``error: <message>`` and exits with status 2.
"""

from __future__ import annotations


class VaezooError(Exception):
    """A problem with the user's input (recipe, arguments, files), reported as one line."""

    exit_code = 2

    def __str__(self) -> str:  # always one line, whatever the caller passed
        return " ".join(str(self.args[0]).split()) if self.args else self.__class__.__name__


class RegistryError(VaezooError):
    """Unknown component, duplicate registration, or a name used for the wrong kind."""


class ConfigError(VaezooError):
    """A recipe or config.json that does not describe a valid model or run."""


class CheckpointError(VaezooError):
    """A checkpoint or weights file that cannot be read safely or does not match the model."""
