"""Variations of the method, each one file: a config and the code it adds."""
