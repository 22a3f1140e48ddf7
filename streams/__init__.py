"""Faust app, topics, codecs and settings wiring."""
