"""Input and output: transactions loaders, run directories (Parquet snapshots), MongoDB sync.

Never imports :mod:`rlreco.engine.kernels`.
"""
