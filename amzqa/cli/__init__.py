"""The shells: the command line (generated from the stage configs), the recipe loader and the demo."""

from amzqa.cli.main import main

__all__ = ["main"]
