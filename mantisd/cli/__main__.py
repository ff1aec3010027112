"""`python -m mantisd.cli`: the same command as the `mantis` console script."""

from mantisd.cli import main

main()
