"""`python -m neuroal_jax.cli ...`: the same as the `neuroal-jax` command."""
import sys

from . import main

sys.exit(main())
