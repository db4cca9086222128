"""Hugging Face `evaluate` metric modules (load a folder with `evaluate.load(path)`; not imported by refcal_zoo)."""
