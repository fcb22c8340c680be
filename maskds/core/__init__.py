"""Shared core: the label space, image decoding, errors, console, atomic writes, process setup."""
