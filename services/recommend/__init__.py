"""Recommendation scoring: catalogue + interactions → time-decayed user profiles → top-k items."""
