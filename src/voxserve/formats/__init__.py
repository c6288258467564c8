"""Transcript to the response formats of the transcription and translation endpoints."""
