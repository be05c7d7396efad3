"""Masks, prune groups, magnitude pruning, sparsity, rewinding, class partitions, controls and tickets."""
