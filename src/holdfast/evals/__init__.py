"""holdfast.evals"""
