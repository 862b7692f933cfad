"""rlreco: offline simulation engine for a state-contextual epsilon-greedy recommender."""

from __future__ import annotations

__version__ = "0.1.0"
