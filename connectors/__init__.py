"""The edges: client SDK, worker SDK, broker, CLI, demo."""
