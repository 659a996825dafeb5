"""The network: the paper's AlexNet and torchvision's, the two-device split, the checkpoint
schema (weights + the config that rebuilds the network), torchvision's weights as a checkpoint."""
