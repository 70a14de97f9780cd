"""unmix.export"""
