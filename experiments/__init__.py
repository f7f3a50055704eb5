"""Runnable studies: data-set-size scaling, transfer to MNIST-5k, the paper's transfer table."""
