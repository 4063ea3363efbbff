"""sbc/api."""
