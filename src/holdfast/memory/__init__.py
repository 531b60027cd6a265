"""holdfast.memory"""
