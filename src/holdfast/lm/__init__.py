"""holdfast.lm"""
