"""Models: the catalogue, the local cache and what a model file holds."""
