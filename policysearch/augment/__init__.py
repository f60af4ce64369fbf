"""The augmentation library other training code imports: the op table, policies and their file format,
the standard policies, and the per-image and per-sample batched transforms.

It imports nothing from the training base, the search or the benchmark (an import-linter contract).
"""
