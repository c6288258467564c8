"""Model engines and the registry that loads, shares and unloads them. Nothing here knows HTTP."""
