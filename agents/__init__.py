"""Faust agents: thin. decode -> policies -> tables -> emit."""
