"""`python -m alexnet_dali.cli ...`: the `alexnet-dali` command (torchrun and the tests start it
so)."""

from alexnet_dali.cli import main

main()
