"""holdfast.testing"""
