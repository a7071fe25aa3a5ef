"""Data sources shared by the experiments.

`mnist.load_mnist` (permutation-invariant MNIST, Figure 6) and `binarized_mnist.load_binarized_mnist` (DRAW,
Figure 4) read the paper's data in its published format or through TFDS, or run offline on Fashion-MNIST (IDX) or
scikit-learn's digits; each module's `check_source` is what an experiment's `validate(config)` calls.
"""
