"""The benchmark: a searched policy against the search-free augmentations, trained the same way and
compared with paired statistics (``policysearch benchmark``).

Modules: ``presets`` (the settings), ``methods`` (what each method trains with), ``anchors`` (the
libraries' own augmentations), ``runner`` (training every method and seed, pretraining), ``stats``,
``report`` (results files) and ``command`` (its command-line options).
"""
