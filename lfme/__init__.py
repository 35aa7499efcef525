"""LFME (Learning From Multiple Experts) for long-tailed classification, plain PyTorch."""
