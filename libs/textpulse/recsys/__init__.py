"""Recommendation toolkit: MovieLens data and temporal splits, ranking metrics, profiles, scorers, encoder."""
