"""`python -m mantisd`: the daemon, the same command as the `mantisd` console script."""

from mantisd.daemon.cli import main

main(prog_name="mantisd")
