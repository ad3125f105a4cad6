"""The `cumulus` command: the typer app, its REST client, `up` (the platform in one command) and
`simulate` (trace replay)."""

from __future__ import annotations


def main() -> None:
    """Console entry point (`cumulus`)."""
    try:
        from control_plane.cli.app import app
    except ImportError as exc:  # installed without the control plane's extra, e.g. on a node
        import sys

        sys.exit(f"error: the cumulus command needs the control plane's packages ({exc.name} is missing): "
                 "pip install 'cumulus[control-plane]'")
    app(prog_name="cumulus")
