"""Application layer: orchestration of prepare, simulate, sweep, evaluate and MongoDB sync.

Each module reads and writes through :mod:`rlreco.io` and computes through
:mod:`rlreco.engine`; the CLI only parses options and calls these functions.
"""
