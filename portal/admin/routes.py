"""Administration pages: МО and integration switches, users, settings, certificates, tokens, audit."""
