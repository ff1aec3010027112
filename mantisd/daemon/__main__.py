"""`python -m mantisd.daemon`: the same entry point as the `mantisd` console script."""

from mantisd.daemon.cli import main

main(prog_name="mantisd")
