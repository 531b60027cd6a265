"""holdfast.sandbox"""
