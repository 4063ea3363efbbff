"""sbc/transport."""
