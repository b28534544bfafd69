"""python -m enrich.cli: the same as the enrich command."""

from enrich.cli import main

main()
