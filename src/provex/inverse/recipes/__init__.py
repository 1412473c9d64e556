"""Training recipes of the shipped LPNs (``provex train lpn-laplace`` / ``provex train lpn-mnist``)."""
