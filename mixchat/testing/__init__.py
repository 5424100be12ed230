"""Builders of small real models for tests and benchmarks (not imported by the app)."""
