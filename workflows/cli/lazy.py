"""A Click group whose commands are imported only when they run."""

from __future__ import annotations

import importlib
from typing import ClassVar

import click


class LazyGroup(click.Group):
    """Loads commands from :attr:`registry` (name -> ``"module:attribute"``) on first use.

    ``terraseg --help`` then lists commands without importing torch or dask.
    :attr:`aliases` maps former command names to current ones: they run the
    current command and are left out of the help.
    """

    registry: ClassVar[dict[str, str]] = {}
    aliases: ClassVar[dict[str, str]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Names of the registered commands."""
        return sorted(self.registry)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the command called ``cmd_name``."""
        target = self.registry.get(self.aliases.get(cmd_name, cmd_name))
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command
