"""unmix.bench"""
