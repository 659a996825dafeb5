"""`alexnet-dali doctor`: the environment report and the checks that prove each stage works on
this machine (CPU checks everywhere, GPU checks where CUDA is)."""
