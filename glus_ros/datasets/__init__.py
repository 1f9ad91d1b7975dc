"""Readers for referring-video datasets on disk (MeViS, Ref-YouTube-VOS, the project's synthetic set)."""
