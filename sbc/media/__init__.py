"""sbc/media."""
