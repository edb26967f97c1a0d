"""The `attent` command line: thin wrappers over library functions (`main`, `train`, `plot`)."""
