"""A small runtime that serves a function bundle (``functions.yaml``) on bjoern."""
