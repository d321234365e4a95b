"""The package version, importable without the rest of raymlp (the root package imports the
SDK; low modules such as the Serve API read the version from here)."""

__version__ = "0.1.0"
