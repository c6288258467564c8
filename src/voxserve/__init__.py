"""voxserve: the OpenAI Audio API, served from local models."""

__version__ = "0.1.0"
