"""alexnet-dali: a fast, faithful AlexNet (Krizhevsky et al. 2012) on DALI and PyTorch."""

__version__ = "0.1.0"
