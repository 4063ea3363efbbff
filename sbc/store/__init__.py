"""sbc/store."""
