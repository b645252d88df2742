"""Clean-image sources (TFDS, .npz, image folders, built-in offline MNIST) and their mixtures."""
