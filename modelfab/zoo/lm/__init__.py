"""lm backbones."""
