"""Adapters to other training loops: your own (``Grower``) and Lightning (``.lightning``)."""
