"""``baseline plugins``: the installed plugins, their components and load failures."""

from __future__ import annotations

from baseline.config.mixture import MIXTURE_NAME
from baseline.plugins.discovery import PluginSet


def print_plugins(plugin_set: PluginSet) -> None:
    """Print a table of ``plugin_set``'s plugins and a line for each that failed to load."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="baseline plugins")
    for column in ("distribution", "version", "entry point", "components"):
        table.add_column(column)
    for info in sorted(plugin_set.plugins, key=lambda i: (i.distribution, i.entry_point)):
        components = ", ".join(f"{kind} {name}" for kind, name in info.components) or "-"
        table.add_row(info.distribution, info.version, info.entry_point, components)
    console = Console()
    console.print(table)
    console.print(
        f"built in: dataset {MIXTURE_NAME} (weighted sources, each any installed dataset "
        "component; docs/mixtures.md)",
        highlight=False,
        soft_wrap=True,  # a whole line in a file or pipe
    )
    for failure in plugin_set.failures:
        console.print(f"[red]failed:[/red] {failure.describe()}", highlight=False, soft_wrap=True)
