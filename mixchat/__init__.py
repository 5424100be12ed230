"""mixchat: a terminal chat for Mixtral-8x7B-Instruct on your own hardware."""

__version__ = "0.1.0"
