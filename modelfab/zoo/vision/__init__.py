"""vision backbones."""
