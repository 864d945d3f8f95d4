"""`python -m xsam_engine segment IMAGE "grasp the red cup" ...` (see xsam_engine.cli)."""

from .cli import main

raise SystemExit(main())
