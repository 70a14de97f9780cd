"""unmix.runtime"""
