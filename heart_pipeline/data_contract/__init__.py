"""The data contract and its checks: reading, safe files, importers, codebook, contract, meaning,
custom expectations and the reference profile."""
