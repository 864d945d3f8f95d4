"""Training of the tabletop demo model (run: `python -m xsam_engine.training --help`)."""
