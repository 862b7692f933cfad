"""Numba kernels: pure functions over arrays. Imports only numpy and numba."""
