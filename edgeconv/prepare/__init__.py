"""The prepare stage: what happens to the eager model before capture — structural
reparameterization (`reparam`) and ConvBN Tune mode for fine-tuning (`tune_mode`)."""
