"""`python -m facebank` is the `facebank` command."""

from facebank.cli import main

main()
