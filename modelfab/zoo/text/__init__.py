"""text backbones."""
