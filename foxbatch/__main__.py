"""`python -m foxbatch`: the same as the `foxbatch` command."""

from foxbatch.cli import main

main()
