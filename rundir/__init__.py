"""The run: its config schema, the layout of its directory, the data it reads, and what a stage is handed."""
