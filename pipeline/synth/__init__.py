"""Synthetic aerial scenes: georeferenced 4-band imagery and the labels it was painted from."""
