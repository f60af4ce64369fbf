"""policysearch: search augmentation policies and apply them per image or per sample on a batch."""

__version__ = "0.1.0"
