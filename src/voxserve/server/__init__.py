"""The HTTP layer: translates between the OpenAI wire format and the engines."""
