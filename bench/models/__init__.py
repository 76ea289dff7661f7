"""Models: the papers' architectures and timm's, by name; weights and offline look-ups."""
