"""Identity: link each pseudonymised person to one hub-wide person across organisations."""
