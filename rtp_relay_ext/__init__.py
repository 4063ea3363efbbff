"""Native RTP relay engine (Cython). Imports nothing of the project."""
