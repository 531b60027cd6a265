"""holdfast.agent"""
