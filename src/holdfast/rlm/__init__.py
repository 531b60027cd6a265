"""holdfast.rlm"""
