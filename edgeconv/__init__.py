"""edgeconv: ship a trained PyTorch conv net to phones and boards, verified and measured."""
__version__ = "0.1.0"
