"""Structural reparameterization: the protocol caller, a block library and the branch algebra.

- `edgeconv.prepare.reparam.protocol.reparameterize_model(model)` calls each block's own merge method.
- The graph pass `reparam-merge` (`edgeconv/passes/reparam_merge.py`) merges branches without any.
- `edgeconv.prepare.reparam.blocks`: RepVGG / MobileOne / ACNet / DBB / dilated-reparam blocks.
"""
