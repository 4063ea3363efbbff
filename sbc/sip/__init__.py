"""sbc/sip."""
