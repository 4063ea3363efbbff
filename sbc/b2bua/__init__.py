"""sbc/b2bua."""
