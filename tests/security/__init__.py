"""Security tests: one per threat of docs/security.md, each attacking through a public surface."""
