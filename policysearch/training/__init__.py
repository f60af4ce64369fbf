"""The training base: data sets, models (built in or the user's), and the training loop that the search's
child models, its recipe selection and the benchmark all use.

It imports the augmentation library and nothing from the search or the benchmark.
"""
