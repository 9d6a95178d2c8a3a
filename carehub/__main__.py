"""`python -m carehub` is the `carehub` command."""

from carehub.cli import main

main()
