"""The command line: ``flowforge train / sample / eval / presets / recipes``.

Everything a command knows of a method it asks the run's recipe (``flowforge.recipes``); this
package parses arguments, prints tables and writes the files a user asked for.
"""

from flowforge.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
