"""The one path from a model reference to something a target can time: resolve the reference, build the
model, deploy it, compress it (token merging, sparsity), write the runtime's artifact and check it."""
