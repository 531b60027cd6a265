"""holdfast.session"""
