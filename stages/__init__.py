"""The pipeline's stages: Ray orchestration of the plain-PyTorch method in `lfme`."""
