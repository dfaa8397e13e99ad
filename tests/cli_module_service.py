"""A service given as a module name: importing it is all it does."""

from __future__ import annotations

import cli_services

cli_services.started.append(("module imported",))
