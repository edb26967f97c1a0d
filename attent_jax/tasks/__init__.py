"""Tasks: the generators behind the training data (teaching target, MNIST-1D, text, arithmetic) and `Dataset`."""
