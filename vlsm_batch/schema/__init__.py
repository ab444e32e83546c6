"""The study schema (``study.schema.json``, shipped as package data) and the generator of its parameter blocks."""
