"""holdfast.harness"""
